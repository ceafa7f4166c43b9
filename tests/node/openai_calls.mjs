// The official OpenAI Node SDK against a router: a whole answer, a stream read to its end
// (text, usage, its events), and the errors the SDK maps to its classes. Reads BASE_URL,
// API_KEY, POOR_KEY (a key whose wallet is empty) and MODEL; prints one JSON object.
import { caught, sdk } from "./common.mjs";

const OpenAI = sdk("openai");

const { BASE_URL, API_KEY, POOR_KEY, MODEL } = process.env;
const messages = [{ role: "user", content: "Hello from Node" }];
const client = (apiKey) => new OpenAI({ baseURL: BASE_URL, apiKey, maxRetries: 0, timeout: 20000 });

const failure = (call) => caught(call, (error) => ({
  class: error.constructor.name, status: error.status ?? null, code: error.code ?? null,
  type: error.type ?? null, param: error.param ?? null }));

const out = {};
const { data: answer, response } = await client(API_KEY).chat.completions
  .create({ model: MODEL, messages, max_tokens: 50 }).withResponse();
out.answer = { content: answer.choices[0].message.content, usage: answer.usage,
               finish_reason: answer.choices[0].finish_reason, model: answer.model,
               cost_header: response.headers.get("x-router-cost-micros"),
               request_id: response.headers.get("x-request-id") };

const stream = await client(API_KEY).chat.completions.create({
  model: MODEL, messages, max_tokens: 50, stream: true, stream_options: { include_usage: true } });
const chunks = [];
for await (const chunk of stream) chunks.push(chunk);
out.stream = {
  text: chunks.map((c) => c.choices[0]?.delta?.content ?? "").join(""),
  usage: chunks.at(-1).usage, usage_chunks: chunks.filter((c) => c.usage).length,
  finish_reasons: chunks.map((c) => c.choices[0]?.finish_reason).filter(Boolean),
  objects: [...new Set(chunks.map((c) => c.object))], ids: new Set(chunks.map((c) => c.id)).size,
};

const models = [];
for await (const model of client(API_KEY).models.list()) models.push(model.id);
out.models = models;

out.unauthorized = await failure(() => client("sk-br-" + "x".repeat(55)).chat.completions
  .create({ model: MODEL, messages }));
out.not_found = await failure(() => client(API_KEY).chat.completions
  .create({ model: "no-such-model", messages }));
out.bad_request = await failure(() => client(API_KEY).chat.completions
  .create({ model: MODEL, messages, temperature: 5 }));
out.no_funds = await failure(() => client(POOR_KEY).chat.completions
  .create({ model: MODEL, messages, max_tokens: 50 }));
out.no_funds_stream = await failure(async () => {
  const refused = await client(POOR_KEY).chat.completions.create({
    model: MODEL, messages, max_tokens: 50, stream: true });
  for await (const _ of refused) { /* nothing comes */ }
});

console.log(JSON.stringify(out));
