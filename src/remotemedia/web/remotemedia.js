// remotemedia.js: a client for StreamPipeline over the server's WebSocket
// (`remotemedia serve --web-port PORT`), for browsers and Node (>= 22: a global
// WebSocket). No dependencies: messages are encoded with the generated schema.
//
//   import { connect } from "./remotemedia.js";
//   const client = connect("ws://127.0.0.1:8080/v1/stream", { token });
//   const stream = await client.stream("vad");            // or a manifest object
//   stream.send(float32Samples, 48000);                    // audio at any rate
//   stream.sendText("hello");                              // to a text pipeline
//   for await (const result of stream) { ... }             // until the server closes
//   stream.close();                                        // flush, then `closed`
//
// Each binary WebSocket message is one serialized StreamRequest (sent) or
// StreamResponse (received), as in proto/remotemedia/v1/streaming.proto.
//
// Over WebRTC (browsers; the server's --webrtc), the same `stream()`, with the
// microphone as a real-time Opus track and the server's audio as a track to play
// (so the browser's echo canceller knows it); the messages go on a data channel:
//
//   import { connectWebRTC } from "./remotemedia.js";
//   const mic = await navigator.mediaDevices.getUserMedia({ audio: true });
//   const stream = await connectWebRTC(location.origin, { token }).stream("converse", { microphone: mic });
//   audioElement.srcObject = stream.remoteStream;          // replies
//   for await (const result of stream) { ... }             // every other result

import { schema } from "./remotemedia_pb.js";

export const PROTOCOL = "remotemedia.v1";

// ------------------------------------------------------------------ the codec

const WIRE = {
  int32: 0, int64: 0, uint32: 0, uint64: 0, sint32: 0, sint64: 0, bool: 0, enum: 0,
  fixed64: 1, sfixed64: 1, double: 1,
  string: 2, bytes: 2, message: 2,
  fixed32: 5, sfixed32: 5, float: 5,
};
const PACKABLE = new Set(["int32", "int64", "uint32", "uint64", "sint32", "sint64", "bool",
  "enum", "fixed64", "sfixed64", "double", "fixed32", "sfixed32", "float"]);
const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: false });

class Writer {
  constructor() { this.parts = []; this.size = 0; }
  bytes(array) { this.parts.push(array); this.size += array.length; }
  varint(value) {
    let big = BigInt.asUintN(64, BigInt(value));
    const out = [];
    while (big > 0x7fn) { out.push(Number(big & 0x7fn) | 0x80); big >>= 7n; }
    out.push(Number(big));
    this.bytes(Uint8Array.from(out));
  }
  tag(no, wire) { this.varint((no << 3) | wire); }
  delimited(array) { this.varint(array.length); this.bytes(array); }
  finish() {
    const out = new Uint8Array(this.size);
    let offset = 0;
    for (const part of this.parts) { out.set(part, offset); offset += part.length; }
    return out;
  }
}

function scalar(writer, type, value) {
  switch (type) {
    case "bool": writer.varint(value ? 1 : 0); break;
    case "sint32": case "sint64": {
      const big = BigInt(value);
      writer.varint((big << 1n) ^ (big < 0n ? -1n : 0n));
      break;
    }
    case "string": writer.delimited(utf8.encode(value)); break;
    case "bytes": writer.delimited(value instanceof Uint8Array ? value : new Uint8Array(value)); break;
    case "double": { const b = new DataView(new ArrayBuffer(8)); b.setFloat64(0, value, true); writer.bytes(new Uint8Array(b.buffer)); break; }
    case "float": { const b = new DataView(new ArrayBuffer(4)); b.setFloat32(0, value, true); writer.bytes(new Uint8Array(b.buffer)); break; }
    case "fixed64": case "sfixed64": { const b = new DataView(new ArrayBuffer(8)); b.setBigUint64(0, BigInt.asUintN(64, BigInt(value)), true); writer.bytes(new Uint8Array(b.buffer)); break; }
    case "fixed32": case "sfixed32": { const b = new DataView(new ArrayBuffer(4)); b.setUint32(0, value >>> 0, true); writer.bytes(new Uint8Array(b.buffer)); break; }
    default: writer.varint(value); // int32, int64, uint32, uint64, enum
  }
}

function isDefault(type, value) {
  if (type === "bytes") return value.length === 0;
  if (type === "string") return value === "";
  if (type === "bool") return value === false;
  return value === 0 || value === 0n;
}

function enumNumber(ref, value) {
  if (typeof value === "number") return value;
  const number = schema.enums[ref]?.[value];
  if (number === undefined) throw new TypeError(`${value} is not a value of ${ref}`);
  return number;
}

/** Encode a plain object as the message `name` (fields by their proto names). */
export function encode(name, object) {
  const fields = schema.messages[name];
  if (!fields) throw new TypeError(`unknown message ${name}`);
  const writer = new Writer();
  for (const field of fields) {
    const value = object[field.name];
    if (value === undefined || value === null) continue;
    if (field.map) {
      for (const [key, item] of Object.entries(value)) {
        const entry = new Writer();
        entry.tag(1, WIRE[field.map.key]); scalar(entry, field.map.key, field.map.key === "string" ? key : Number(key));
        if (field.map.value === "message") { entry.tag(2, 2); entry.delimited(encode(field.map.ref, item)); }
        else { entry.tag(2, WIRE[field.map.value]); scalar(entry, field.map.value, field.map.value === "enum" ? enumNumber(field.map.ref, item) : item); }
        writer.tag(field.no, 2); writer.delimited(entry.finish());
      }
      continue;
    }
    const items = field.repeated ? value : [value];
    if (field.repeated && field.packed && PACKABLE.has(field.type)) {
      if (items.length === 0) continue;
      const packed = new Writer();
      for (const item of items) scalar(packed, field.type, field.type === "enum" ? enumNumber(field.ref, item) : item);
      writer.tag(field.no, 2); writer.delimited(packed.finish());
      continue;
    }
    for (const item of items) {
      if (field.type === "message") { writer.tag(field.no, 2); writer.delimited(encode(field.ref, item)); continue; }
      const number = field.type === "enum" ? enumNumber(field.ref, item) : item;
      if (!field.repeated && !field.oneof && !field.optional && isDefault(field.type, number)) continue;
      writer.tag(field.no, WIRE[field.type]); scalar(writer, field.type, number);
    }
  }
  return writer.finish();
}

class Reader {
  constructor(bytes) { this.bytes = bytes; this.at = 0; this.view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength); }
  done() { return this.at >= this.bytes.length; }
  varint() {
    let result = 0n, shift = 0n, byte;
    do {
      if (this.at >= this.bytes.length) throw new RangeError("truncated message");
      byte = this.bytes[this.at++];
      result |= BigInt(byte & 0x7f) << shift; shift += 7n;
    } while (byte & 0x80);
    return result;
  }
  take(length) {
    if (this.at + length > this.bytes.length) throw new RangeError("truncated message");
    const out = this.bytes.subarray(this.at, this.at + length); this.at += length; return out;
  }
  skip(wire) {
    if (wire === 0) this.varint();
    else if (wire === 1) this.take(8);
    else if (wire === 2) this.take(Number(this.varint()));
    else if (wire === 5) this.take(4);
    else throw new RangeError(`unsupported wire type ${wire}`);
  }
}

function readScalar(reader, type) {
  switch (type) {
    case "bool": return reader.varint() !== 0n;
    case "int32": return Number(BigInt.asIntN(32, reader.varint()));
    case "uint32": case "enum": return Number(BigInt.asUintN(32, reader.varint()));
    case "int64": return Number(BigInt.asIntN(64, reader.varint()));
    case "uint64": return Number(reader.varint());
    case "sint32": case "sint64": { const v = reader.varint(); return Number((v >> 1n) ^ -(v & 1n)); }
    case "string": return fromUtf8.decode(reader.take(Number(reader.varint())));
    case "bytes": return reader.take(Number(reader.varint())).slice();
    case "double": { const v = reader.view.getFloat64(reader.at, true); reader.at += 8; return v; }
    case "float": { const v = reader.view.getFloat32(reader.at, true); reader.at += 4; return v; }
    case "fixed64": { const v = reader.view.getBigUint64(reader.at, true); reader.at += 8; return Number(v); }
    case "sfixed64": { const v = reader.view.getBigInt64(reader.at, true); reader.at += 8; return Number(v); }
    case "fixed32": { const v = reader.view.getUint32(reader.at, true); reader.at += 4; return v; }
    case "sfixed32": { const v = reader.view.getInt32(reader.at, true); reader.at += 4; return v; }
    default: throw new TypeError(`unknown type ${type}`);
  }
}

/** Decode the message `name` into a plain object (fields by their proto names).
 * 64-bit integers become Numbers (exact up to 2^53). Absent scalars are absent. */
export function decode(name, bytes) {
  const fields = schema.messages[name];
  if (!fields) throw new TypeError(`unknown message ${name}`);
  const byNumber = new Map(fields.map((field) => [field.no, field]));
  const reader = new Reader(bytes instanceof Uint8Array ? bytes : new Uint8Array(bytes));
  const object = {};
  while (!reader.done()) {
    const key = Number(reader.varint());
    const no = key >>> 3, wire = key & 7;
    const field = byNumber.get(no);
    if (!field) { reader.skip(wire); continue; }
    if (field.map) {
      const entry = new Reader(reader.take(Number(reader.varint())));
      let k, v;
      while (!entry.done()) {
        const t = Number(entry.varint());
        if ((t >>> 3) === 1) k = readScalar(entry, field.map.key);
        else if ((t >>> 3) === 2) v = field.map.value === "message" ? decode(field.map.ref, entry.take(Number(entry.varint()))) : readScalar(entry, field.map.value);
        else entry.skip(t & 7);
      }
      (object[field.name] ??= {})[k ?? (field.map.key === "string" ? "" : 0)] = v ?? (field.map.value === "string" ? "" : field.map.value === "message" ? {} : 0);
      continue;
    }
    let value;
    if (field.type === "message") value = decode(field.ref, reader.take(Number(reader.varint())));
    else if (wire === 2 && PACKABLE.has(field.type)) {
      const packed = new Reader(reader.take(Number(reader.varint())));
      const values = [];
      while (!packed.done()) values.push(readScalar(packed, field.type));
      (object[field.name] ??= []).push(...values);
      continue;
    } else value = readScalar(reader, field.type);
    if (field.repeated) (object[field.name] ??= []).push(value);
    else {
      if (field.oneof) { for (const other of fields) if (other.oneof === field.oneof) delete object[other.name]; }
      object[field.name] = value;
    }
  }
  return object;
}

/** Which field of a oneof is set in a decoded object, if any. */
export function which(name, object, oneof) {
  return schema.messages[name].find((field) => field.oneof === oneof && object[field.name] !== undefined)?.name;
}

// ------------------------------------------------------------------ the client

const REQUEST = "remotemedia.v1.StreamRequest";
const RESPONSE = "remotemedia.v1.StreamResponse";
const CLOSE = 1; // StreamControl.COMMAND_CLOSE

/** A manifest object as the wire's PipelineManifest (params as JSON text). */
function wireManifest(manifest) {
  const nodes = (manifest.nodes ?? []).map((node) => ({
    id: node.id,
    node_type: node.node_type,
    params: JSON.stringify(node.params ?? {}),
    is_streaming: Boolean(node.is_streaming),
  }));
  const connections = (manifest.connections ?? []).map((c) => ({ from: c.from, to: c.to }));
  return { version: manifest.version ?? "v1", nodes, connections, metadata: manifest.metadata ?? {} };
}

/** An error the server reported (typed) or the connection's end. */
export class RemoteMediaError extends Error {
  constructor(message, { type = "INTERNAL", code = 0, context = "", node = "" } = {}) {
    super(message);
    this.name = "RemoteMediaError";
    this.type = type; // ERROR_TYPE_* name without the prefix, e.g. VALIDATION
    this.code = code; // the WebSocket close code, if the socket closed
    this.context = context;
    this.node = node;
  }
}

function errorOf(error, code = 0) {
  const type = Object.entries(schema.enums["remotemedia.v1.ErrorType"]).find(([, n]) => n === (error.error_type ?? 0))?.[0] ?? "ERROR_TYPE_INTERNAL";
  return new RemoteMediaError(error.message ?? "unknown error", {
    type: type.replace(/^ERROR_TYPE_/, ""), code, context: error.context ?? "", node: error.failing_node_id ?? "",
  });
}

function audioBuffer(samples, sampleRate, channels = 1) {
  const floats = samples instanceof Float32Array ? samples : Float32Array.from(samples);
  const bytes = new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength);
  return { audio: { samples: bytes, sample_rate: sampleRate, channels, format: "AUDIO_FORMAT_F32", num_samples: floats.length / channels } };
}

/** Turn a decoded DataBuffer into something a page can use. */
export function dataOf(buffer) {
  if (buffer.text) return { kind: "text", text: fromUtf8.decode(buffer.text.text_data ?? new Uint8Array()) };
  if (buffer.json) return { kind: "json", value: JSON.parse(buffer.json.json_payload || "null") };
  if (buffer.audio) {
    const raw = buffer.audio.samples ?? new Uint8Array();
    const copy = raw.slice(); // aligned for the Float32Array
    return { kind: "audio", samples: new Float32Array(copy.buffer, 0, copy.length / 4), sampleRate: buffer.audio.sample_rate, channels: buffer.audio.channels || 1 };
  }
  if (buffer.control) return { kind: "control", control: buffer.control };
  if (buffer.binary) return { kind: "binary", bytes: buffer.binary.data, mime: buffer.binary.mime_type };
  return { kind: "other", buffer };
}

/** One session: send chunks, iterate results. */
export class Stream {
  constructor(socket) {
    this.socket = socket;
    this.sequence = 0;
    this.sessionId = "";
    this.statuses = [];
    this.closed = null; // the StreamClosed message, once received
    this.metrics = null;
    this.queue = [];
    this.waiting = null;
    this.ended = false;
    this.failure = null;
  }

  /** Send audio (a Float32Array, mono unless `channels`) at its own sample rate. */
  send(samples, sampleRate, { nodeId = "", channels = 1 } = {}) {
    return this._chunk(audioBuffer(samples, sampleRate, channels), nodeId);
  }

  /** Send text (to a text pipeline, such as `speak`). */
  sendText(text, { nodeId = "" } = {}) {
    return this._chunk({ text: { text_data: utf8.encode(text), encoding: "utf-8" } }, nodeId);
  }

  _chunk(buffer, nodeId) {
    const sequence = this.sequence++;
    this._send({ data_chunk: { node_id: nodeId, buffer, sequence } });
    return sequence;
  }

  _send(request) {
    if (this.ended) throw new RemoteMediaError("the session is over", { type: "CLOSED" });
    this.socket.send(encode(REQUEST, request));
  }

  /** Ask the server to finish the work it has and close (results keep coming). */
  close() { if (!this.ended) this._send({ control: { command: CLOSE } }); }

  /** Stop now: close the socket (the server ends the session at once). */
  cancel() { this.socket.close(1000); }

  _push(item) {
    if (this.waiting) { const resolve = this.waiting; this.waiting = null; resolve(item); }
    else this.queue.push(item);
  }

  _next() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    return new Promise((resolve) => { this.waiting = resolve; });
  }

  async *[Symbol.asyncIterator]() {
    while (true) {
      const item = await this._next();
      if (item === null) { if (this.failure) throw this.failure; return; }
      yield item;
    }
  }
}

/** A connection factory: every `stream()` opens its own WebSocket. */
export function connect(url, { token = null, WebSocketImpl = globalThis.WebSocket } = {}) {
  return {
    /** Open a session with a bundled pipeline's name or a manifest object;
     * resolves once the server sent `ready`. */
    stream(manifest, { clientVersion = "v1", onStatus = null, traceparent = null } = {}) {
      return openStream(url, token, WebSocketImpl, manifest, clientVersion, onStatus, traceparent);
    },
    /** A bundled pipeline's manifest (`vad`, `transcribe`, `speak`, ...), from the server. */
    example(name) { return fetchExample(url, name); },
  };
}

/** The server's bundled example `name`, as a manifest object. */
export async function fetchExample(url, name) {
  const base = new URL(url.replace(/^ws/, "http"));
  const response = await fetch(new URL(`/examples/${encodeURIComponent(name)}.json`, base));
  if (!response.ok) throw new RemoteMediaError(`no bundled pipeline named ${JSON.stringify(name)} (${response.status})`, { type: "VALIDATION" });
  return response.json();
}

/** Take one serialized StreamResponse into `stream`; "ready" when it is the session's ready. */
function receiveResponse(stream, bytes, onStatus) {
  const response = decode(RESPONSE, bytes);
  const kind = which(RESPONSE, response, "response");
  if (kind === "ready") { stream.sessionId = response.ready.session_id; return "ready"; }
  if (kind === "result") {
    const outputs = response.result.data_outputs ?? {};
    if (outputs._status) { const line = dataOf(outputs._status).text; stream.statuses.push(line); onStatus?.(line); return kind; }
    for (const [node, buffer] of Object.entries(outputs)) stream._push({ node, sequence: response.result.sequence ?? 0, data: dataOf(buffer), processingMs: response.result.processing_time_ms ?? 0 });
    return kind;
  }
  if (kind === "error") {
    const error = errorOf(response.error);
    if (error.context.startsWith("lost_input")) { stream._push({ node: error.node, sequence: Number(/sequence=(\d+)/.exec(error.context)?.[1] ?? 0), error }); return kind; }
    stream.failure = error; // the end follows at once: it rejects, with its code
    return kind;
  }
  if (kind === "metrics") { stream.metrics = response.metrics; return kind; }
  if (kind === "closed") { stream.closed = response.closed; }
  return kind;
}

async function openStream(url, token, WebSocketImpl, manifest, clientVersion, onStatus, traceparent = null) {
      const document = typeof manifest === "string" ? await fetchExample(url, manifest) : manifest;
      const protocols = token ? [PROTOCOL, `bearer.${token}`] : [PROTOCOL];
      const socket = new WebSocketImpl(url, protocols);
      socket.binaryType = "arraybuffer";
      const stream = new Stream(socket);
      return new Promise((resolve, reject) => {
        let ready = false;
        socket.onopen = () => {
          // A W3C traceparent puts the session in the page's trace: the only text message.
          if (traceparent) socket.send(JSON.stringify({ traceparent }));
          const init = { manifest: wireManifest(document), client_version: clientVersion };
          socket.send(encode(REQUEST, { init }));
        };
        socket.onmessage = (event) => {
          if (receiveResponse(stream, new Uint8Array(event.data), onStatus) === "ready") { ready = true; resolve(stream); }
        };
        socket.onclose = (event) => {
          stream.ended = true;
          if (stream.failure) stream.failure.code = event.code;
          else if (!stream.closed && event.code !== 1000) stream.failure = new RemoteMediaError(`the connection closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`, { type: "UNAVAILABLE", code: event.code });
          if (!ready) reject(stream.failure ?? new RemoteMediaError("the server closed the connection before the session was ready", { type: "UNAVAILABLE", code: event.code }));
          stream._push(null);
        };
        socket.onerror = () => {}; // the close event follows, with its code
      });
}

// ------------------------------------------------------------------ WebRTC

const HEARTBEAT_MS = 1000; // the server ends a session it has not heard from for 5 s

function base64(bytes) {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(text);
}

function fromBase64(text) {
  return Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
}

/** Whether the server at `base` (http://host:port) answers WebRTC offers; its ICE servers. */
export async function webrtcOffered(base, { token = null, fetchImpl = globalThis.fetch } = {}) {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  try {
    const response = await fetchImpl(new URL("/v1/webrtc", base), { headers });
    if (!response.ok) return null;
    const body = await response.json();
    return body.ice_servers.map((s) => ({ urls: s.urls, username: s.username, credential: s.credential }));
  } catch {
    return null;
  }
}

/** A Stream whose messages go over a data channel, with the peer connection beside it. */
class RtcStream extends Stream {
  constructor(pc, channel) {
    super(channel);
    this.pc = pc;
    this.remoteStream = null; // the server's audio (play it: the browser's echo canceller knows it)
    this.microphoneSender = null; // the audio sender reserved by `microphone: true`
  }
  /** Send `media`'s audio track on the sender reserved with `microphone: true`
   *  (no renegotiation: ask for the microphone once the session is ready). */
  async attachMicrophone(media) {
    if (!this.microphoneSender) throw new RemoteMediaError("open the stream with `microphone: true` first", { type: "VALIDATION" });
    await this.microphoneSender.replaceTrack(media.getAudioTracks()[0] ?? null);
  }
  cancel() { this.pc.close(); this.socket.onclose?.(); }
}

/** A connection factory over WebRTC: `stream()` as `connect()`'s, plus a microphone.
 *  `base` is the server's page URL (http://host:port). */
export function connectWebRTC(base, { token = null, RTCPeerConnectionImpl = globalThis.RTCPeerConnection, fetchImpl = globalThis.fetch } = {}) {
  return {
    /** Open a session. `microphone`: a MediaStream whose audio track is sent (Opus),
     *  or `true` to attach one later (`stream.attachMicrophone(media)`), or null.
     *  `audio`: where the session's audio outputs go: "track" (`remoteStream`, to play),
     *  "channel" (results, as over the WebSocket) or "none". */
    stream(manifest, { clientVersion = "v1", onStatus = null, microphone = null, audio = "track", traceparent = null } = {}) {
      return openRtcStream(base, token, RTCPeerConnectionImpl, fetchImpl, manifest, clientVersion, onStatus, microphone, audio, traceparent);
    },
    example(name) { return fetchExample(base, name); },
  };
}

async function openRtcStream(base, token, RTCPeerConnectionImpl, fetchImpl, manifest, clientVersion, onStatus, microphone, audio, traceparent = null) {
  const iceServers = await webrtcOffered(base, { token, fetchImpl });
  if (iceServers === null) throw new RemoteMediaError("this server does not offer WebRTC (serve --webrtc)", { type: "UNAVAILABLE" });
  const document = typeof manifest === "string" ? await fetchExample(base, manifest) : manifest;
  const pc = new RTCPeerConnectionImpl({ iceServers });
  const channel = pc.createDataChannel(PROTOCOL, { ordered: true });
  channel.binaryType = "arraybuffer";
  const stream = new RtcStream(pc, channel);
  if (microphone === true) stream.microphoneSender = pc.addTransceiver("audio", { direction: "sendrecv" }).sender;
  else if (microphone) for (const track of microphone.getAudioTracks()) pc.addTrack(track, microphone);
  else pc.addTransceiver("audio", { direction: "recvonly" });
  pc.ontrack = (event) => { stream.remoteStream = event.streams[0] ?? new MediaStream([event.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise((resolve) => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.addEventListener("icegatheringstatechange", () => { if (pc.iceGatheringState === "complete") resolve(); });
  });
  const init = encode(REQUEST, { init: { manifest: wireManifest(document), client_version: clientVersion } });
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const reply = await fetchImpl(new URL("/v1/webrtc/offer", base), {
    method: "POST", headers, body: JSON.stringify({ type: "offer", sdp: pc.localDescription.sdp, init: base64(init), audio, ...(traceparent ? { traceparent } : {}) }),
  });
  const body = await reply.json().catch(() => ({}));
  if (!reply.ok) {
    pc.close();
    const error = body.response ? decode(RESPONSE, fromBase64(body.response)).error : { message: `the offer was refused (HTTP ${reply.status})` };
    throw errorOf(error ?? {}, reply.status);
  }
  stream.sessionId = body.session_id;
  await pc.setRemoteDescription({ type: "answer", sdp: body.sdp });
  return new Promise((resolve, reject) => {
    let ready = false;
    let heartbeat = null;
    const end = (why) => {
      if (stream.ended) return;
      stream.ended = true;
      clearInterval(heartbeat);
      if (!stream.failure && !stream.closed && why) stream.failure = new RemoteMediaError(why, { type: "UNAVAILABLE" });
      if (!ready) reject(stream.failure ?? new RemoteMediaError("the connection ended before the session was ready", { type: "UNAVAILABLE" }));
      stream._push(null);
      pc.close();
    };
    channel.onopen = () => { heartbeat = setInterval(() => { if (channel.readyState === "open") channel.send("ping"); }, HEARTBEAT_MS); };
    channel.onmessage = (event) => {
      if (typeof event.data === "string") return;
      const kind = receiveResponse(stream, new Uint8Array(event.data), onStatus);
      if (kind === "ready") { ready = true; resolve(stream); }
      if (kind === "closed" || (kind === "error" && stream.failure)) setTimeout(() => end(null), 0);
    };
    channel.onclose = () => end("the data channel closed");
    stream.socket.onclose = () => end(null); // cancel()
    pc.onconnectionstatechange = () => { if (["failed", "closed"].includes(pc.connectionState)) end(`the connection ${pc.connectionState}`); };
  });
}
