// remotemedia.js under Node (its global WebSocket and fetch) against a real server.
//   node client.mjs <path to remotemedia.js> <ws url> <token>
// Prints what it saw as one JSON object.
const [, , modulePath, url, token] = process.argv;
const { connect, RemoteMediaError } = await import(modulePath);

const client = connect(url, { token });
const seen = {};

// A bundled pipeline by name, text through it.
const text = await client.stream("passthrough");
seen.session = Boolean(text.sessionId);
for (const word of ["one", "two", "three"]) text.sendText(word);
text.close();
seen.text = [];
for await (const result of text) seen.text.push([result.node, result.sequence, result.data.text]);
seen.textClosed = text.closed?.reason ?? null;

// A session in the page's trace: its traceparent goes first, as the one text message.
const traced = await client.stream("passthrough", { traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01" });
traced.sendText("traced");
traced.close();
seen.traced = [];
for await (const result of traced) seen.traced.push(result.data.text);

// Audio round trip: the samples come back as sent.
const audio = await client.stream({ version: "v1", nodes: [{ id: "echo", node_type: "PassThrough" }] });
const samples = Float32Array.from({ length: 320 }, (_, i) => Math.sin(i / 10) * 0.5);
audio.send(samples, 16000);
audio.close();
for await (const result of audio) {
  seen.audio = {
    node: result.node,
    rate: result.data.sampleRate,
    equal: result.data.samples.length === samples.length && result.data.samples.every((v, i) => v === samples[i]),
  };
}

// A bad manifest: a typed error naming the path.
try {
  await client.stream({ version: "v1", nodes: [{ id: "x", node_type: "NoSuchNode" }] });
  seen.badManifest = "accepted";
} catch (error) {
  seen.badManifest = { type: error.type, message: error.message, isError: error instanceof RemoteMediaError };
}

// A wrong token: refused.
try {
  await connect(url, { token: "wrong" }).stream("passthrough");
  seen.wrongToken = "accepted";
} catch (error) {
  seen.wrongToken = { type: error.type, code: error.code };
}

console.log(JSON.stringify(seen));
