// inbound_check.mjs - the official Anthropic SDK (/v1/messages) and OpenAI
// SDK (/v1/responses) against a running Longmen for one model, whatever
// channel serves it (tests/integration/test_inbound_sdk.py starts both and
// scripts the upstreams). Usage:
//   node inbound_check.mjs <base_url> <key> <model> <expect.json>
// expect: {"hello": text, "usage": [in, out], "long_out": n, "responses": bool}
// Prints "OK <case>" per case and "RESULT <case> <json>" for the streams
// whose text and usage the test compares with /v1/chat/completions; any
// failure throws (exit code 1).
import Anthropic from '@anthropic-ai/sdk';
import OpenAI from 'openai';
import assert from 'node:assert/strict';

const [baseURL, key, model, expectJson] = process.argv.slice(2);
const want = JSON.parse(expectJson);
const ant = new Anthropic({ apiKey: key, baseURL, maxRetries: 0 });
const tools = [{
  name: 'get_weather', description: 'Get weather',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];
// a 1x1 PNG
const PNG = 'iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVR4nGP4z8AAAAMBAQDJ/pLvAAAAAElFTkSuQmCC';

// plain
const m = await ant.messages.create({
  model, max_tokens: 64, system: 'You are terse.', messages: [{ role: 'user', content: 'Say hello' }],
});
assert.equal(m.content.find((b) => b.type === 'text').text, want.hello);
assert.equal(m.stop_reason, 'end_turn');
assert.deepEqual([m.usage.input_tokens, m.usage.output_tokens], want.usage);
console.log('OK create');

// streamed: the SDK folds every event
const s = ant.messages.stream({
  model, max_tokens: 64, system: 'You are terse.', messages: [{ role: 'user', content: 'Say hello' }],
});
let streamed = '';
s.on('text', (t) => { streamed += t; });
const f = await s.finalMessage();
assert.equal(streamed, want.hello);
assert.deepEqual([f.usage.input_tokens, f.usage.output_tokens], want.usage);
console.log('RESULT msgs-stream ' + JSON.stringify({ text: streamed, input: f.usage.input_tokens,
  output: f.usage.output_tokens }));
console.log('OK stream');

// tools over two turns, the second turn streamed
const t1 = await ant.messages.create({
  model, max_tokens: 64, tools, messages: [{ role: 'user', content: 'Weather in Paris?' }],
});
assert.equal(t1.stop_reason, 'tool_use');
const tu = t1.content.find((b) => b.type === 'tool_use');
assert.equal(tu.name, 'get_weather');
assert.deepEqual(tu.input, { city: 'Paris' });
const t2 = await ant.messages.stream({
  model, max_tokens: 64, tools,
  messages: [
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: t1.content },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: 'sunny, 21C' }] },
  ],
}).finalMessage();
assert.equal(t2.content.find((b) => b.type === 'text').text, 'It is sunny in Paris.');
console.log('OK tools');

// an image block
const im = await ant.messages.create({
  model, max_tokens: 64, messages: [{ role: 'user', content: [
    { type: 'image', source: { type: 'base64', media_type: 'image/png', data: PNG } },
    { type: 'text', text: 'What is in the image?' }] }],
});
assert.equal(im.content.find((b) => b.type === 'text').text, 'I see a red square.');
console.log('OK image');

// an upstream refusal reaches the SDK as its typed error
await assert.rejects(ant.messages.create({ model, max_tokens: 8, messages: [{ role: 'user', content: 'trigger-error' }] }),
  (e) => e instanceof Anthropic.BadRequestError && e.error?.error?.type === 'invalid_request_error');
console.log('OK error');

// Claude Code-style: system blocks, tools, thinking enabled, a long stream,
// the key as a bearer token (ANTHROPIC_AUTH_TOKEN)
const cc = new Anthropic({ authToken: key, apiKey: null, baseURL, maxRetries: 0 });
const ls = cc.messages.stream({
  model, max_tokens: 4096,
  system: [{ type: 'text', text: 'You are Claude Code.' },
           { type: 'text', text: 'Be helpful.', cache_control: { type: 'ephemeral' } }],
  tools, thinking: { type: 'enabled', budget_tokens: 1024 }, metadata: { user_id: 'user-cc' },
  messages: [{ role: 'user', content: [{ type: 'text', text: 'Write a long answer', cache_control: { type: 'ephemeral' } }] }],
});
let n = 0;
ls.on('text', () => { n++; });
const lf = await ls.finalMessage();
assert.equal(lf.content.find((b) => b.type === 'text').text, 'word '.repeat(200).trim());
assert.ok(n >= 100, `deltas: ${n}`);
assert.equal(lf.usage.output_tokens, want.long_out);
console.log('OK claude-code');

if (want.responses) {
  const oa = new OpenAI({ apiKey: key, baseURL: baseURL + '/v1', maxRetries: 0 });
  const ftools = [{ type: 'function', name: 'get_weather', description: 'Get weather', strict: false,
    parameters: tools[0].input_schema }];
  const r = await oa.responses.create({ model, instructions: 'You are terse.', input: 'Say hello' });
  assert.equal(r.output_text, want.hello);
  assert.deepEqual([r.usage.input_tokens, r.usage.output_tokens], want.usage);
  console.log('OK responses-create');
  const rs = oa.responses.stream({ model, instructions: 'You are terse.', input: 'Say hello' });
  let rt = '';
  rs.on('response.output_text.delta', (e) => { rt += e.delta; });
  const rf = await rs.finalResponse();
  assert.equal(rt, want.hello);
  console.log('RESULT resp-stream ' + JSON.stringify({ text: rt, input: rf.usage.input_tokens,
    output: rf.usage.output_tokens }));
  console.log('OK responses-stream');
  const c1 = await oa.responses.create({ model, input: 'Weather in Paris?', tools: ftools });
  const call = c1.output.find((it) => it.type === 'function_call');
  assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris' });
  const c2 = await oa.responses.create({ model, tools: ftools, store: false, input: [
    { role: 'user', content: 'Weather in Paris?' }, ...c1.output,
    { type: 'function_call_output', call_id: call.call_id, output: 'sunny, 21C' }] });
  assert.equal(c2.output_text, 'It is sunny in Paris.');
  console.log('OK responses-tools');
  const ri = await oa.responses.create({ model, input: [{ role: 'user', content: [
    { type: 'input_image', image_url: 'data:image/png;base64,' + PNG },
    { type: 'input_text', text: 'What is in the image?' }] }] });
  assert.equal(ri.output_text, 'I see a red square.');
  console.log('OK responses-image');
  await assert.rejects(oa.responses.create({ model, input: 'trigger-error' }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400);
  console.log('OK responses-error');
}
