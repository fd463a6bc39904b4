// openai_check.mjs - the official OpenAI SDK's Responses API client against
// a running Longmen (tests/integration/test_responses_sdk.py starts both).
// Usage: node openai_check.mjs <base_url> <key> <model>
// Prints "OK <case>" per case; any failure throws (exit code 1).
import OpenAI from 'openai';
import assert from 'node:assert/strict';

const [baseURL, key, model] = process.argv.slice(2);
const client = new OpenAI({ apiKey: key, baseURL: baseURL + '/v1', maxRetries: 0 });
const tools = [{
  type: 'function', name: 'get_weather', description: 'Get weather', strict: false,
  parameters: { type: 'object', properties: { city: { type: 'string' } }, required: ['city'] },
}];

// responses.create, plain: output_text is the SDK's own fold of the output
const r = await client.responses.create({ model, instructions: 'You are terse.', input: 'Say hello' });
assert.equal(r.object, 'response');
assert.equal(r.status, 'completed');
assert.equal(r.output_text, 'Hello from Qwen.');
assert.deepEqual([r.usage.input_tokens, r.usage.output_tokens, r.usage.total_tokens], [12, 4, 16]);
console.log('OK create');

// responses.stream: the helper folds every event; finalResponse matches create
const s = client.responses.stream({ model, instructions: 'You are terse.', input: 'Say hello' });
let streamed = '';
s.on('response.output_text.delta', (e) => { streamed += e.delta; });
const f = await s.finalResponse();
assert.equal(streamed, 'Hello from Qwen.');
assert.equal(f.output_text, r.output_text);
assert.equal(f.status, 'completed');
assert.deepEqual([f.usage.input_tokens, f.usage.output_tokens], [12, 4]);
console.log('OK stream');

// create with stream: true: the raw events, in order, numbered
const raw = await client.responses.create({ model, input: 'Say hello', stream: true });
const types = [];
let seq = 0;
for await (const ev of raw) {
  assert.equal(ev.sequence_number, seq++);
  types.push(ev.type);
}
assert.deepEqual(types.slice(0, 2), ['response.created', 'response.in_progress']);
assert.equal(types.at(-1), 'response.completed');
console.log('OK stream-events');

// function calls over two turns, the second with function_call_output
const t1 = await client.responses.create({ model, input: 'Weather in Paris?', tools });
const call = t1.output.find((it) => it.type === 'function_call');
assert.ok(call, 'a function_call item');
assert.equal(call.name, 'get_weather');
assert.deepEqual(JSON.parse(call.arguments), { city: 'Paris' });
const t2 = await client.responses.create({
  model, tools, store: false,
  input: [{ role: 'user', content: 'Weather in Paris?' }, ...t1.output,
    { type: 'function_call_output', call_id: call.call_id, output: 'sunny, 21C' }],
});
assert.equal(t2.output_text, 'It is sunny in Paris.');
console.log('OK tools');

// the same call streamed: the helper folds the argument deltas
const ts = client.responses.stream({ model, input: 'Weather in Paris?', tools });
let args = '';
ts.on('response.function_call_arguments.delta', (e) => { args += e.delta; });
const tf = await ts.finalResponse();
const scall = tf.output.find((it) => it.type === 'function_call');
assert.equal(scall.name, 'get_weather');
assert.deepEqual(JSON.parse(scall.arguments), { city: 'Paris' });
assert.deepEqual(JSON.parse(args), { city: 'Paris' });
console.log('OK tools-stream');

// typed errors: a stateful request (400) and a bad key (401)
await assert.rejects(client.responses.create({ model, input: 'x', previous_response_id: 'resp_1' }),
  (e) => e instanceof OpenAI.BadRequestError && /previous_response_id/.test(e.message));
const bad = new OpenAI({ apiKey: 'sk-wrong', baseURL: baseURL + '/v1', maxRetries: 0 });
await assert.rejects(bad.responses.create({ model, input: 'x' }),
  (e) => e instanceof OpenAI.AuthenticationError && e.status === 401);
console.log('OK errors');
