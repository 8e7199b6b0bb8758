// Chat calls from Node over HTTPS, with Node's own TLS stack (TLSWrap: OpenSSL on memory BIOs,
// inside the `node` executable), the way Node agents call cloud APIs.
//
//   node node_https.mjs --base-url https://127.0.0.1:PORT --model M --n N --via fetch|https [--stream] [--fresh]
//
// Calls share one keep-alive connection; with --fresh (https only) each call has a connection,
// and so an OpenSSL `SSL` object, of its own.
//
// The server's certificate comes from NODE_EXTRA_CA_CERTS. Prints one JSON line at the end:
// {"requests", "ok", "prompt_tokens", "completion_tokens", "errors"} (the token counts the server
// reported in `usage`), like workload.py.
import https from "node:https";
import { parseArgs } from "node:util";

const { values: args } = parseArgs({
  options: {
    "base-url": { type: "string" },
    model: { type: "string" },
    n: { type: "string", default: "1" },
    via: { type: "string", default: "fetch" },
    stream: { type: "boolean", default: false },
    fresh: { type: "boolean", default: false },
  },
});

const url = `${args["base-url"]}/v1/chat/completions`;

function body() {
  const b = {
    model: args.model,
    max_tokens: 5,
    messages: [{ role: "user", content: "Why is the sky blue?" }],
  };
  if (args.stream) {
    b.stream = true;
    b.stream_options = { include_usage: true };
  }
  return JSON.stringify(b);
}

// The usage object of a whole answer: the JSON body, or the SSE chunk that carries it.
function usageOf(text) {
  if (!args.stream) {
    return JSON.parse(text).usage;
  }
  let usage = null;
  for (const line of text.split("\n")) {
    if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
    const chunk = JSON.parse(line.slice(6));
    if (chunk.usage) usage = chunk.usage;
  }
  return usage;
}

async function viaFetch() {
  const res = await fetch(url, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: body(),
  });
  const text = await res.text();
  if (!res.ok) throw new Error(`status ${res.status}`);
  return usageOf(text);
}

const agent = new https.Agent({ keepAlive: true });

function viaHttps() {
  return new Promise((resolve, reject) => {
    const req = https.request(
      url,
      {
        method: "POST",
        agent: args.fresh ? false : agent,
        headers: { "content-type": "application/json" },
      },
      (res) => {
        let text = "";
        res.setEncoding("utf8");
        res.on("data", (d) => (text += d));
        res.on("end", () => {
          if (res.statusCode !== 200) reject(new Error(`status ${res.statusCode}`));
          else resolve(usageOf(text));
        });
      },
    );
    req.on("error", reject);
    req.end(body());
  });
}

const summary = { requests: 0, ok: 0, prompt_tokens: 0, completion_tokens: 0, errors: {} };
for (let i = 0; i < Number(args.n); i++) {
  summary.requests++;
  try {
    const usage = await (args.via === "https" ? viaHttps() : viaFetch());
    summary.ok++;
    summary.prompt_tokens += usage.prompt_tokens;
    summary.completion_tokens += usage.completion_tokens;
  } catch (e) {
    const k = e.message || String(e);
    summary.errors[k] = (summary.errors[k] || 0) + 1;
  }
}
agent.destroy();
console.log(JSON.stringify(summary));
