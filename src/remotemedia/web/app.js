// The live page: microphone -> pipeline -> live results, spoken replies played back.
import { connect, connectWebRTC, webrtcOffered, RemoteMediaError } from "./remotemedia.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const url = `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/stream`;
// WebRTC when the server offers it (replies then play from the peer connection, so
// the browser's echo canceller removes them from the microphone); ?transport=websocket
// forces the WebSocket.
const forceWebSocket = params.get("transport") === "websocket";

// What the tests (and the curious) can read: window.__remotemedia.
const seen = {
  state: "idle", transport: null, framesSent: 0, results: 0, played: 0, events: [], transcripts: [], errors: [], rtts: [],
  interims: 0, replies: [], interruptions: [], silenced: 0, lateAudio: 0,
  replySound: [], // over WebRTC: [ms, loud] each time the reply track's level crosses the threshold
};
window.__remotemedia = seen;

const TEXT_PIPELINES = new Set(["speak", "loopback"]); // they take text, not the microphone
const SPEAKING_PIPELINES = new Set(["speak", "loopback", "converse"]); // their audio is played
const FRAMES = 600; // the waveform shows 12 s of 20 ms frames

let run = null; // the running session's pieces

function setState(state) {
  seen.state = state;
  const pill = $("state");
  pill.textContent = state;
  pill.className = `pill ${state}`;
  $("start").disabled = state === "live" || state === "connecting";
  $("stop").disabled = !(state === "live" || state === "connecting");
}

function showError(error) {
  const type = error instanceof RemoteMediaError ? error.type : "ERROR";
  const titles = {
    VALIDATION: "The pipeline was refused",
    AUTHENTICATION: "The server refused the token",
    RESOURCE_LIMIT: "The server is at its limit",
    UNAVAILABLE: "The connection was lost",
    NODE_EXECUTION: "A node failed",
  };
  seen.errors.push({ type, message: error.message });
  $("error-title").textContent = titles[type] ?? "Something went wrong";
  $("error-text").textContent = error.message;
  $("error").hidden = false;
  console.warn(`remotemedia: ${type}: ${error.message}`);
}

function addLine(list, text, meta = "") {
  const item = document.createElement("li");
  item.textContent = text;
  if (meta) {
    const span = document.createElement("span");
    span.className = "meta";
    span.textContent = meta;
    item.append(span);
  }
  list.append(item);
  list.scrollTop = list.scrollHeight;
}

// ------------------------------------------------------------------ the waveform

// One bar per 20 ms frame sent; frame k holds stream time [20k, 20k + 20) ms.
const wave = { peaks: new Float32Array(FRAMES), speech: new Uint8Array(FRAMES), head: 0, count: 0, speechFrom: null };

/** Shade the frames of stream time [fromMs, toMs) as speech (those still shown). */
function shade(fromMs, toMs) {
  const first = Math.max(Math.floor(fromMs / 20), wave.count - FRAMES, 0);
  const last = Math.min(Math.ceil(toMs / 20), wave.count);
  for (let k = first; k < last; k++) wave.speech[k % FRAMES] = 1;
}

function pushFrame(samples) {
  let peak = 0, energy = 0;
  for (const v of samples) { const a = Math.abs(v); if (a > peak) peak = a; energy += v * v; }
  wave.peaks[wave.head] = peak;
  wave.speech[wave.head] = 0;
  wave.head = (wave.head + 1) % FRAMES;
  wave.count++;
  if (wave.speechFrom !== null) shade(wave.speechFrom, wave.count * 20); // still speaking
  const db = 10 * Math.log10(energy / samples.length + 1e-10);
  $("level").style.width = `${Math.max(0, Math.min(100, (db + 60) * (100 / 60)))}%`;
}

function draw() {
  const canvas = $("wave");
  const width = (canvas.width = canvas.clientWidth * devicePixelRatio);
  const height = (canvas.height = canvas.clientHeight * devicePixelRatio);
  const g = canvas.getContext("2d");
  const styles = getComputedStyle(document.documentElement);
  const step = width / FRAMES;
  for (let i = 0; i < FRAMES; i++) {
    const at = (wave.head + i) % FRAMES;
    if (wave.speech[at]) { g.fillStyle = styles.getPropertyValue("--speech"); g.fillRect(i * step, 0, step + 1, height); }
    const h = Math.max(1, wave.peaks[at] * height * 0.95);
    g.fillStyle = styles.getPropertyValue("--wave");
    g.fillRect(i * step, (height - h) / 2, Math.max(1, step * 0.7), h);
  }
  requestAnimationFrame(draw);
}
requestAnimationFrame(draw);

// ------------------------------------------------------------------ results

function handle(result) {
  seen.results++;
  const sentAt = run?.sentAt.get(result.sequence);
  if (sentAt !== undefined) { // a chunk's first result: the round trip, in ms
    run.sentAt.delete(result.sequence);
    if (seen.rtts.length < 20000) seen.rtts.push(performance.now() - sentAt);
  }
  $("received").textContent = seen.results;
  if (result.error) { showError(result.error); return; }
  const { data } = result;
  if (data.kind === "json" && "is_speech_start" in data.value) {
    const v = data.value;
    if (v.is_speech_start) { wave.speechFrom = v.timestamp_ms; seen.events.push({ event: "start", ms: v.timestamp_ms }); addLine($("events"), "speech started", `${(v.timestamp_ms / 1000).toFixed(2)} s`); }
    if (v.is_speech_end) { if (wave.speechFrom !== null) shade(wave.speechFrom, v.timestamp_ms); wave.speechFrom = null; seen.events.push({ event: "end", ms: v.timestamp_ms }); addLine($("events"), "speech ended", `${(v.timestamp_ms / 1000).toFixed(2)} s`); }
    return;
  }
  if (data.kind === "json" && data.value?.interim === true) { showInterim(data.value); return; }
  if (data.kind === "json" && data.value?.interrupted === true) {
    // The user talked over the reply: what is still queued here must not play.
    const v = data.value;
    run?.silence();
    if (run) run.cut = v.turn;
    seen.interruptions.push({ turn: v.turn, spokenMs: v.spoken_ms, at: performance.now() });
    addLine($("events"), "reply interrupted", `after ${v.spoken_ms} ms of it`);
    return;
  }
  if (data.kind === "json" && "turn_done" in data.value) { addLine($("events"), "reply finished", data.value.turn_done); return; }
  if (data.kind === "json" && typeof data.value?.reply === "string") {
    seen.replies.push({ turn: data.value.turn, text: data.value.reply, at: performance.now() });
    if (run) run.turn = data.value.turn; // the reply audio that follows is this turn's
    addLine($("events"), `reply: ${data.value.reply}`, data.value.turn);
    return;
  }
  if (data.kind === "json" && typeof data.value?.error === "string" && data.value.turn) {
    addLine($("events"), `reply failed: ${data.value.error}`, data.value.turn);
    return;
  }
  if (data.kind === "json" && typeof data.value?.text === "string") {
    run?.interims.get(data.value.utterance)?.remove(); // the final replaces its interim line
    run?.interims.delete(data.value.utterance);
    const text = data.value.text.trim();
    const latency = run?.latencyOf(data.value.end_ms);
    if (typeof data.value.start_ms === "number") shade(data.value.start_ms, data.value.end_ms);
    seen.transcripts.push({ text, latencyMs: latency ?? null });
    addLine($("transcripts"), text || "(nothing heard)", latency != null ? `${Math.round(latency)} ms after the end of speech` : "");
    return;
  }
  if (data.kind === "audio" && run?.speaks) {
    if (run.turn && run.turn === run.cut) { seen.lateAudio++; return; } // never: the server stops first
    run.play(data);
    return;
  }
  if (data.kind === "text" && data.text.trim()) addLine($("events"), data.text.trim(), result.node);
}

/** Show (or update) the live line of an utterance still being spoken: stable words, then the rest. */
function showInterim(value) {
  if (!run) return;
  seen.interims++;
  let line = run.interims.get(value.utterance);
  if (!line) {
    line = document.createElement("li");
    line.className = "interim";
    run.interims.set(value.utterance, line);
    $("transcripts").append(line);
  }
  const stable = document.createElement("span");
  stable.textContent = value.stable;
  const unstable = document.createElement("span");
  unstable.className = "unstable";
  unstable.textContent = value.unstable;
  line.replaceChildren(stable, " ", unstable);
  $("transcripts").scrollTop = $("transcripts").scrollHeight;
}

// ------------------------------------------------------------------ a session

async function manifestChoice() {
  const choice = $("pipeline").value;
  if (choice !== "custom") return choice;
  try { return JSON.parse($("manifest").value); }
  catch (error) { throw new RemoteMediaError(`The manifest is not valid JSON: ${error.message}`, { type: "VALIDATION" }); }
}

async function start() {
  $("error").hidden = true;
  setState("connecting");
  try {
    const choice = $("pipeline").value;
    const typed = TEXT_PIPELINES.has(choice);
    const speaks = SPEAKING_PIPELINES.has(choice);
    const ctx = new AudioContext();
    await ctx.resume();
    const token = $("token").value || null;
    const rtc = !forceWebSocket && (await webrtcOffered(location.origin, { token })) !== null;
    seen.transport = rtc ? "webrtc" : "websocket";
    $("transport").textContent = rtc ? "WebRTC" : "WebSocket";
    const manifest = await manifestChoice();
    const stream = rtc
      // Only a speaking pipeline's audio is played (as over the WebSocket); the VAD's
      // pass-through audio, say, is not even sent.
      ? await connectWebRTC(location.origin, { token }).stream(manifest, { microphone: !typed, audio: speaks ? "track" : "none" })
      : await connect(url, { token }).stream(manifest);
    // The microphone once the session is ready (as soon as it opens, it plays).
    const media = typed ? null : await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false } });
    if (rtc && media) await stream.attachMicrophone(media);
    run = { ctx, stream, speaks, rtc, sent: [], sentAt: new Map(), playAt: 0, mic: null, interims: new Map(), playing: new Set() };
    if (rtc) {
      $("reply").srcObject = stream.remoteStream; // the server's track: replies, paced
      watchReplies(run, stream.remoteStream);
    }
    $("session").textContent = stream.sessionId.slice(0, 8);
    run.latencyOf = (endMs) => {
      if (typeof endMs !== "number") return null;
      const hit = run.sent.find(([ms]) => ms >= endMs);
      return hit ? performance.now() - hit[1] : null;
    };
    run.play = (data) => {
      const buffer = ctx.createBuffer(data.channels, data.samples.length / data.channels, data.sampleRate);
      buffer.copyToChannel(data.samples, 0);
      const source = ctx.createBufferSource();
      source.buffer = buffer;
      source.connect(ctx.destination);
      run.playAt = Math.max(run.playAt, ctx.currentTime + 0.05);
      source.start(run.playAt);
      run.playing.add(source);
      source.onended = () => run.playing.delete(source);
      run.playAt += buffer.duration;
      seen.played++;
      $("played").textContent = seen.played;
    };
    run.silence = () => { // stop the reply now, and drop what was queued to play after it
      for (const source of run.playing) source.stop();
      seen.silenced += run.playing.size;
      run.playing.clear();
      run.playAt = 0;
    };
    if (media) await startMicrophone(run, media);
    $("say").hidden = !typed;
    setState("live");
    for await (const result of stream) handle(result);
    setState("idle");
  } catch (error) {
    setState("failed");
    showError(error);
  } finally {
    stopMicrophone();
    clearInterval(run?.replyTimer);
    $("reply").srcObject = null;
  }
}

// Over WebRTC the replies never reach the page as results: when the track is loud
// (speech) and when it falls silent is noted, so a cut reply can be seen to stop.
function watchReplies(session, remote) {
  if (!remote) return;
  const analyser = session.ctx.createAnalyser();
  analyser.fftSize = 1024;
  session.ctx.createMediaStreamSource(remote).connect(analyser);
  const samples = new Float32Array(analyser.fftSize);
  let loud = false;
  session.replyTimer = setInterval(() => {
    analyser.getFloatTimeDomainData(samples);
    let energy = 0;
    for (const v of samples) energy += v * v;
    const now = Math.sqrt(energy / samples.length) > 0.01;
    if (now !== loud && seen.replySound.length < 5000) seen.replySound.push([performance.now(), now]);
    if (now && !loud) { seen.played++; $("played").textContent = seen.played; } // heard, not just sent
    loud = now;
  }, 10);
}

// The microphone's frames: over the WebSocket, sent as chunks; over WebRTC the
// browser sends the track itself (Opus), and the frames only draw the level.
async function startMicrophone(session, media) {
  await session.ctx.audioWorklet.addModule("capture-worklet.js");
  const source = session.ctx.createMediaStreamSource(media);
  const capture = new AudioWorkletNode(session.ctx, "capture");
  let samples = 0;
  capture.port.onmessage = ({ data }) => {
    if (session.stream.ended) return;
    if (!session.rtc) {
      const sequence = session.stream.send(data, session.ctx.sampleRate);
      session.sentAt.set(sequence, performance.now());
      if (session.sentAt.size > 2000) session.sentAt.delete(session.sentAt.keys().next().value);
    }
    samples += data.length;
    session.sent.push([(samples / session.ctx.sampleRate) * 1000, performance.now()]);
    if (session.sent.length > 3000) session.sent.splice(0, 1000);
    seen.framesSent++;
    $("sent").textContent = seen.framesSent;
    pushFrame(data);
  };
  source.connect(capture);
  session.mic = { media, source, capture };
}

function stopMicrophone() {
  if (!run?.mic) return;
  run.mic.capture.port.onmessage = null;
  run.mic.source.disconnect();
  for (const track of run.mic.media.getTracks()) track.stop();
  run.mic = null;
}

function stop() {
  stopMicrophone();
  run?.stream.close(); // the server finishes what it has, then closes
}

// ------------------------------------------------------------------ wiring

$("pipeline").addEventListener("change", () => { $("manifest").hidden = $("pipeline").value !== "custom"; });
$("start").addEventListener("click", start);
$("stop").addEventListener("click", stop);
$("reconnect").addEventListener("click", start);
$("say").addEventListener("submit", (event) => {
  event.preventDefault();
  const text = $("text").value.trim();
  if (text && run?.stream && !run.stream.ended) { run.stream.sendText(text); $("text").value = ""; }
});

const chosen = params.get("pipeline");
if (chosen && /^[\w-]+$/.test(chosen)) {
  // Any bundled pipeline the server has (/examples/<name>.json), listed or not.
  if (![...$("pipeline").options].some((o) => o.value === chosen)) $("pipeline").add(new Option(chosen, chosen), 0);
  $("pipeline").value = chosen;
}
$("manifest").hidden = $("pipeline").value !== "custom";
if (params.get("autostart") === "1") start();
