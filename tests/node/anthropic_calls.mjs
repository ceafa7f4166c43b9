// The official Anthropic Node SDK against a router's Messages API: a whole message, a
// stream through the SDK's own helper (its events and final message), and the errors it
// maps to its classes. Reads BASE_URL (the router's root), API_KEY, POOR_KEY and MODEL;
// prints one JSON object.
import { caught, sdk } from "./common.mjs";

const Anthropic = sdk("@anthropic-ai/sdk");

const { BASE_URL, API_KEY, POOR_KEY, MODEL } = process.env;
const messages = [{ role: "user", content: "Hello from Node" }];
const client = (apiKey) => new Anthropic({ baseURL: BASE_URL, apiKey, maxRetries: 0,
  timeout: 20000 });

const failure = (call) => caught(call, (error) => ({
  class: error.constructor.name, status: error.status ?? null,
  type: error.error?.error?.type ?? null }));

const out = {};
const { data: message, response } = await client(API_KEY).messages
  .create({ model: MODEL, max_tokens: 50, messages }).withResponse();
out.message = { type: message.type, role: message.role, model: message.model,
                stop_reason: message.stop_reason, usage: message.usage,
                text: message.content.map((block) => block.text ?? "").join(""),
                cost_header: response.headers.get("x-router-cost-micros"),
                request_id: response.headers.get("x-request-id") };

const stream = client(API_KEY).messages.stream({ model: MODEL, max_tokens: 50, messages });
const events = [];
stream.on("streamEvent", (event) => events.push(event.type));
const final = await stream.finalMessage();
out.stream = { text: final.content.map((block) => block.text ?? "").join(""),
               usage: final.usage, stop_reason: final.stop_reason,
               first: events[0], last: events.at(-1),
               deltas: events.filter((type) => type === "content_block_delta").length };

out.unauthorized = await failure(() => client("sk-br-" + "x".repeat(55)).messages
  .create({ model: MODEL, max_tokens: 50, messages }));
out.not_found = await failure(() => client(API_KEY).messages
  .create({ model: "no-such-model", max_tokens: 50, messages }));
out.no_funds = await failure(() => client(POOR_KEY).messages
  .create({ model: MODEL, max_tokens: 50, messages }));

console.log(JSON.stringify(out));
