#!/usr/bin/env node
// h2c (HTTP/2 over cleartext TCP, prior knowledge) peers for llm-observer's HTTP/2 tests, on
// Node's own `http2` module (nghttp2): real frames, real HPACK with its dynamic table.
//
//   node h2c.js server                    deterministic OpenAI-compatible SSE server on an ephemeral
//                                         port; prints `listening on 127.0.0.1:PORT`, runs until killed
//   node h2c.js client PORT N TOKENS [MODEL]
//                                         N concurrent streamed chat completions on ONE connection;
//                                         prints one JSON line: what the client saw
//   node h2c.js gemini PORT N TOKENS MODEL
//                                         N concurrent Gemini streamGenerateContent calls on ONE
//                                         connection, even ones with ?alt=sse (SSE), odd ones without
//                                         (a streamed JSON array); prints what the client saw
//   node h2c.js relay DIR NAME           server + recording relay for another client: prints
//                                         `listening on 127.0.0.1:PORT` (the relay) and writes the
//                                         fixture files when that client's connection closes
//   node h2c.js record DIR NAME N TOKENS CONCURRENT
//                                         server + recording TCP relay + client: writes the exact
//                                         bytes of each direction and a segment timeline (fixtures)
//
// The server answers POST /v1/chat/completions: `max_tokens` content chunks ("t0 ", "t1 ", ...),
// each in its own DATA frame 2 ms apart, after a role-only chunk; then the finish chunk, a usage
// chunk when `stream_options.include_usage` is set, and `data: [DONE]`. prompt_tokens is the
// number of characters of the last message's content; completion_tokens is max_tokens. Non-stream
// requests get one JSON body with the same usage. Responses name the request's model. Gemini's :streamGenerateContent is answered too
// (SSE with ?alt=sse, a streamed JSON array without), with usageMetadata.
'use strict';
const http2 = require('http2');
const net = require('net');
const fs = require('fs');
const path = require('path');

const DEFAULT_MODEL = 'h2-model';

function openaiStream(stream, req) {
  const MODEL = req.model || DEFAULT_MODEL;
  const n = req.max_tokens || 4;
  const prompt = promptTokens(req);
  const id = 'chatcmpl-h2';
  const chunk = (delta, finish) => ({
    id, object: 'chat.completion.chunk', created: 1700000000, model: MODEL,
    choices: [{ index: 0, delta, finish_reason: finish }],
  });
  const events = [chunk({ role: 'assistant', content: '' }, null)];
  for (let i = 0; i < n; i++) events.push(chunk({ content: `t${i} ` }, null));
  events.push(chunk({}, 'stop'));
  if (req.stream_options && req.stream_options.include_usage) {
    events.push({ id, object: 'chat.completion.chunk', created: 1700000000, model: MODEL, choices: [],
      usage: { prompt_tokens: prompt, completion_tokens: n, total_tokens: prompt + n } });
  }
  stream.respond({ ':status': 200, 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
  const lines = events.map((e) => `data: ${JSON.stringify(e)}\n\n`).concat(['data: [DONE]\n\n']);
  paced(stream, lines);
}

function openaiJson(stream, req) {
  const MODEL = req.model || DEFAULT_MODEL;
  const n = req.max_tokens || 4;
  const prompt = promptTokens(req);
  const content = Array.from({ length: n }, (_, i) => `t${i} `).join('');
  const body = JSON.stringify({
    id: 'chatcmpl-h2', object: 'chat.completion', created: 1700000000, model: MODEL,
    choices: [{ index: 0, message: { role: 'assistant', content }, finish_reason: 'stop' }],
    usage: { prompt_tokens: prompt, completion_tokens: n, total_tokens: prompt + n },
  });
  stream.respond({ ':status': 200, 'content-type': 'application/json' });
  stream.end(body);
}

function gemini(stream, req, sse, model) {
  const MODEL = model;
  const n = (req.generationConfig && req.generationConfig.maxOutputTokens) || 4;
  const contents = req.contents || [];
  const last = contents.length ? contents[contents.length - 1] : { parts: [] };
  const prompt = (last.parts || []).map((p) => (p.text || '').length).reduce((a, b) => a + b, 0);
  const pieces = [];
  for (let i = 0; i < n; i++) {
    const c = { candidates: [{ content: { role: 'model', parts: [{ text: `t${i} ` }] }, index: 0 }],
      modelVersion: MODEL };
    if (i === n - 1) {
      c.candidates[0].finishReason = 'STOP';
      c.usageMetadata = { promptTokenCount: prompt, candidatesTokenCount: n, totalTokenCount: prompt + n };
    }
    pieces.push(c);
  }
  if (sse) {
    stream.respond({ ':status': 200, 'content-type': 'text/event-stream' });
    paced(stream, pieces.map((p) => `data: ${JSON.stringify(p)}\r\n\r\n`));
  } else {
    stream.respond({ ':status': 200, 'content-type': 'application/json; charset=UTF-8' });
    paced(stream, pieces.map((p, i) => (i === 0 ? '[' : ',\r\n') + JSON.stringify(p)).concat([']']));
  }
}

function promptTokens(req) {
  const msgs = req.messages || [];
  const last = msgs.length ? msgs[msgs.length - 1] : { content: '' };
  return String(last.content || '').length;
}

// One write per piece, 2 ms apart, so each is its own DATA frame with its own capture time.
function paced(stream, pieces) {
  let i = 0;
  const next = () => {
    if (stream.destroyed) return;
    if (i === pieces.length) return stream.end();
    stream.write(pieces[i++]);
    setTimeout(next, 2);
  };
  next();
}

function serve(onListen) {
  const server = http2.createServer();
  server.on('stream', (stream, headers) => {
    const chunks = [];
    stream.on('data', (c) => chunks.push(c));
    stream.on('end', () => {
      let req = {};
      try { req = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}'); } catch (e) { /* empty */ }
      const p = headers[':path'] || '';
      if (p.startsWith('/v1/chat/completions')) {
        return req.stream ? openaiStream(stream, req) : openaiJson(stream, req);
      }
      const m = /^\/v1beta\/models\/([^/:]+):streamGenerateContent/.exec(p);
      if (m) return gemini(stream, req, p.includes('alt=sse'), decodeURIComponent(m[1]));
      stream.respond({ ':status': 404, 'content-type': 'application/json' });
      stream.end('{"error":{"message":"not found","type":"not_found_error"}}');
    });
  });
  server.listen(0, '127.0.0.1', () => onListen(server, server.address().port));
  return server;
}

// N chat completions on one session: `concurrent` at a time (all at once when it equals N).
function client(port, n, tokens, concurrent, done, model = DEFAULT_MODEL) {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', (e) => { console.error(e); process.exit(1); });
  const seen = { requests: 0, ok: 0, content_chunks: 0, prompt_tokens: 0, completion_tokens: 0 };
  let started = 0;
  let finished = 0;
  const one = (i) => {
    started++;
    const stream = i % 4 !== 3 || concurrent > 1;
    const body = JSON.stringify({
      model, stream, max_tokens: tokens + (i % 3),
      stream_options: stream ? { include_usage: true } : undefined,
      messages: [{ role: 'user', content: `hello number ${i}` }],
    });
    const req = session.request({
      ':method': 'POST', ':path': '/v1/chat/completions', 'content-type': 'application/json',
      authorization: 'Bearer sk-fixture-secret', 'user-agent': 'h2c-test/1',
    });
    let status = 0;
    let buf = '';
    req.on('response', (h) => { status = h[':status']; });
    req.setEncoding('utf8');
    req.on('data', (d) => { buf += d; });
    req.on('end', () => {
      seen.requests++;
      if (status === 200) seen.ok++;
      if (stream) {
        for (const line of buf.split('\n')) {
          if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
          const ev = JSON.parse(line.slice(6));
          if (ev.choices.length && ev.choices[0].delta.content) seen.content_chunks++;
          if (ev.usage) { seen.prompt_tokens += ev.usage.prompt_tokens; seen.completion_tokens += ev.usage.completion_tokens; }
        }
      } else {
        const ev = JSON.parse(buf);
        seen.prompt_tokens += ev.usage.prompt_tokens;
        seen.completion_tokens += ev.usage.completion_tokens;
      }
      finished++;
      if (finished === n) { session.close(() => done(seen)); } else if (started < n) one(started);
    });
    req.end(body);
  };
  for (let i = 0; i < Math.min(concurrent, n); i++) one(i);
}

// N Gemini streamed calls on one session, all at once.
function geminiClient(port, n, tokens, model, done) {
  const session = http2.connect(`http://127.0.0.1:${port}`);
  session.on('error', (e) => { console.error(e); process.exit(1); });
  const seen = { requests: 0, ok: 0, content_chunks: 0, prompt_tokens: 0, completion_tokens: 0 };
  let finished = 0;
  for (let i = 0; i < n; i++) {
    const sse = i % 2 === 0;
    const path = `/v1beta/models/${encodeURIComponent(model)}:streamGenerateContent${sse ? '?alt=sse' : ''}`;
    const req = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/json',
      'x-goog-api-key': 'fixture-secret-key' });
    let status = 0;
    let buf = '';
    req.on('response', (h) => { status = h[':status']; });
    req.setEncoding('utf8');
    req.on('data', (d) => { buf += d; });
    req.on('end', () => {
      seen.requests++;
      if (status === 200) seen.ok++;
      const chunks = sse
        ? buf.split('\r\n\r\n').filter((e) => e.startsWith('data: ')).map((e) => JSON.parse(e.slice(6)))
        : JSON.parse(buf);
      for (const c of chunks) {
        if (c.candidates[0].content.parts[0].text) seen.content_chunks++;
        if (c.usageMetadata) {
          seen.prompt_tokens += c.usageMetadata.promptTokenCount;
          seen.completion_tokens += c.usageMetadata.candidatesTokenCount;
        }
      }
      if (++finished === n) session.close(() => done(seen));
    });
    req.end(JSON.stringify({ contents: [{ role: 'user', parts: [{ text: `hello number ${i}` }] }],
      generationConfig: { maxOutputTokens: tokens + (i % 3) } }));
  }
}

// Server + a TCP relay that records the first connection through it; `ready(port)` gets the
// relay's port, `closed()` runs once the recorded connection closed and the files are written.
function recorder(dir, name, ready, closed) {
  serve((server, port) => {
    const t0 = { v: null };
    const bytes = { c2s: [], s2c: [] };
    const timeline = [];
    const now = () => {
      const t = process.hrtime.bigint();
      if (t0.v === null) t0.v = t;
      return Number(t - t0.v) / 1e9;
    };
    const relay = net.createServer((c) => {
      const s = net.connect(port, '127.0.0.1');
      const rec = (d, buf) => { timeline.push([now().toFixed(6), d, buf.length]); bytes[d].push(buf); };
      c.on('data', (b) => { rec('c2s', b); s.write(b); });
      s.on('data', (b) => { rec('s2c', b); c.write(b); });
      c.on('end', () => s.end());
      s.on('end', () => c.end());
      c.on('close', () => {
        fs.writeFileSync(path.join(dir, `${name}.request.bin`), Buffer.concat(bytes.c2s));
        fs.writeFileSync(path.join(dir, `${name}.response.bin`), Buffer.concat(bytes.s2c));
        fs.writeFileSync(path.join(dir, `${name}.timeline.tsv`),
          't_s\tdir\tbytes\n' + timeline.map((r) => r.join('\t')).join('\n') + '\n');
        relay.close();
        server.close();
        closed();
      });
    });
    relay.listen(0, '127.0.0.1', () => ready(relay.address().port));
  });
}

function record(dir, name, n, tokens, concurrent) {
  recorder(dir, name, (port) => {
    client(port, n, tokens, concurrent, (seen) => {
      fs.writeFileSync(path.join(dir, `${name}.client.json`), JSON.stringify(seen) + '\n');
    });
  }, () => {});
}

const [mode, ...args] = process.argv.slice(2);
if (mode === 'server') {
  serve((_s, port) => { console.log(`listening on 127.0.0.1:${port}`); });
} else if (mode === 'client') {
  const [port, n, tokens] = args.slice(0, 3).map(Number);
  client(port, n, tokens, n, (seen) => { console.log(JSON.stringify(seen)); }, args[3]);
} else if (mode === 'gemini') {
  const [port, n, tokens] = args.slice(0, 3).map(Number);
  geminiClient(port, n, tokens, args[3], (seen) => { console.log(JSON.stringify(seen)); });
} else if (mode === 'relay') {
  recorder(args[0], args[1], (port) => { console.log(`listening on 127.0.0.1:${port}`); }, () => {});
} else if (mode === 'record') {
  const [dir, name, n, tokens, concurrent] = args;
  record(dir, name, Number(n), Number(tokens), Number(concurrent));
} else {
  console.error('usage: h2c.js server | client PORT N TOKENS [MODEL] | gemini PORT N TOKENS MODEL | relay DIR NAME | record DIR NAME N TOKENS CONCURRENT');
  process.exit(2);
}
