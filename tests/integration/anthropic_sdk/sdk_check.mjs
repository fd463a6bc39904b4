// sdk_check.mjs - the official Anthropic SDK against a running Longmen
// (tests/integration/test_messages_sdk.py starts both). Usage:
//   node sdk_check.mjs <base_url> <key> <model>
// Prints "OK <case>" per case; any failure throws (exit code 1).
import Anthropic from '@anthropic-ai/sdk';
import assert from 'node:assert/strict';

const [baseURL, key, model] = process.argv.slice(2);
const client = new Anthropic({ apiKey: key, baseURL, maxRetries: 0 });
const tools = [{
  name: 'get_weather', description: 'Get weather',
  input_schema: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];

// messages.create, plain
const m = await client.messages.create({
  model, max_tokens: 64, system: 'You are terse.',
  messages: [{ role: 'user', content: 'Say hello' }],
});
assert.equal(m.type, 'message');
assert.equal(m.content[0].type, 'text');
assert.equal(m.content[0].text, 'Hello from Qwen.');
assert.equal(m.stop_reason, 'end_turn');
assert.deepEqual([m.usage.input_tokens, m.usage.output_tokens], [12, 4]);
console.log('OK create');

// messages.stream: the SDK parses every event; finalMessage matches create
const s = client.messages.stream({
  model, max_tokens: 64, system: 'You are terse.',
  messages: [{ role: 'user', content: 'Say hello' }],
});
let streamed = '';
s.on('text', (t) => { streamed += t; });
const f = await s.finalMessage();
assert.equal(streamed, 'Hello from Qwen.');
assert.equal(f.content[0].text, m.content[0].text);
assert.deepEqual([f.usage.input_tokens, f.usage.output_tokens], [12, 4]);
assert.equal(f.stop_reason, 'end_turn');
console.log('OK stream');

// tool use round trip: tool_use, then tool_result back
const t1 = await client.messages.create({
  model, max_tokens: 64, tools, messages: [{ role: 'user', content: 'Weather in Paris?' }],
});
assert.equal(t1.stop_reason, 'tool_use');
const tu = t1.content.find((b) => b.type === 'tool_use');
assert.ok(tu, 'a tool_use block');
assert.equal(tu.name, 'get_weather');
assert.deepEqual(tu.input, { city: 'Paris' });
const t2 = await client.messages.create({
  model, max_tokens: 64, tools,
  messages: [
    { role: 'user', content: 'Weather in Paris?' },
    { role: 'assistant', content: t1.content },
    { role: 'user', content: [{ type: 'tool_result', tool_use_id: tu.id, content: 'sunny, 21C' }] },
  ],
});
assert.equal(t2.content[0].text, 'It is sunny in Paris.');
console.log('OK tools');

// the same round trip streamed: input_json_delta accumulates into the input
const ts = client.messages.stream({
  model, max_tokens: 64, tools, messages: [{ role: 'user', content: 'Weather in Paris?' }],
});
const tf = await ts.finalMessage();
const stu = tf.content.find((b) => b.type === 'tool_use');
assert.deepEqual(stu.input, { city: 'Paris' });
assert.equal(tf.stop_reason, 'tool_use');
console.log('OK tools-stream');

// Claude Code-style: system blocks, tools, thinking enabled, a long stream,
// with the key as a bearer token (ANTHROPIC_AUTH_TOKEN)
const cc = new Anthropic({ authToken: key, apiKey: null, baseURL, maxRetries: 0 });
const ls = cc.messages.stream({
  model, max_tokens: 4096,
  system: [{ type: 'text', text: 'You are Claude Code.' },
           { type: 'text', text: 'Be helpful.', cache_control: { type: 'ephemeral' } }],
  tools, thinking: { type: 'enabled', budget_tokens: 1024 },
  metadata: { user_id: 'user-cc' },
  messages: [{ role: 'user', content: [{ type: 'text', text: 'Write a long answer', cache_control: { type: 'ephemeral' } }] }],
});
let n = 0;
ls.on('text', () => { n++; });
const lf = await ls.finalMessage();
assert.equal(lf.content[0].text, 'word '.repeat(200).trim());
assert.ok(n >= 100, `deltas: ${n}`);
assert.equal(lf.usage.output_tokens, 200);
console.log('OK claude-code');

// errors reach the SDK as its typed errors
const bad = new Anthropic({ apiKey: 'sk-wrong', baseURL, maxRetries: 0 });
await assert.rejects(bad.messages.create({ model, max_tokens: 8, messages: [{ role: 'user', content: 'x' }] }),
  (e) => e instanceof Anthropic.AuthenticationError && e.error?.error?.type === 'authentication_error');
console.log('OK auth-error');
