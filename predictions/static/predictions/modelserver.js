// A browser client for the model server's WebSocket (/ws/projects/<slug>/). Plain ES module,
// no dependencies:
//
//   import { connect } from "https://models.example.com/static/predictions/modelserver.js";
//   const client = connect("https://models.example.com", "digits", { token });
//   client.addEventListener("ready", (event) => console.log(event.detail.model));
//   const { labels } = await client.predict(canvas);   // Blob, canvas, ImageData, video, img
//
// predict() resolves with the server's prediction reply (plus `roundTripMs`) and rejects with a
// ModelServerError whose `code` is the server's error code, or "disconnected" / "closed".
// feedback(reply.id, "3") tells the server what an image sent on this connection really shows
// (it keeps the latest ones): it resolves with `{type: "feedback_saved", id, example}`.
// With `{preview: true}` (or after setPreview(true)) every prediction also carries
// `input_preview`, a PNG data URL of what the model sees (its input, scaled back to pixels).
// At most `maxInFlight` frames wait for replies; further predict() calls queue here, in order.
// A dropped connection is reopened with exponential backoff; a refused one (unknown project,
// wrong token) is not. Events: "state", "ready", "model_changed", "error".

const REFUSALS = {
  4403: ["forbidden", "This project is private and the token is missing or wrong."],
  4404: ["not_found", "There is no project with this name on the server."],
};

export class ModelServerError extends Error {
  constructor(code, message, id = null) {
    super(message);
    this.name = "ModelServerError";
    this.code = code;
    this.id = id;
  }
}

/** The WebSocket address of a project: `https://host` + `digits` -> `wss://host/ws/projects/digits/`. */
export function projectUrl(server, slug) {
  const url = new URL(`ws/projects/${encodeURIComponent(slug)}/`, new URL(server, location.href).origin + "/");
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

/** Open a client for `slug` on `server` (an http(s) origin; this page's by default). */
export function connect(server, slug, options = {}) {
  const client = new ModelServerClient(projectUrl(server ?? location.origin, slug), options);
  client.open();
  return client;
}

export class ModelServerClient extends EventTarget {
  constructor(url, { token = null, maxInFlight = 2, reconnect = true, minDelayMs = 500, maxDelayMs = 15000, preview = false } = {}) {
    super();
    this.url = url;
    this.token = token;
    this.preview = Boolean(preview); // sent as an options message after each `ready`
    this.maxInFlight = maxInFlight;
    this.reconnect = reconnect;
    this.minDelayMs = minDelayMs;
    this.maxDelayMs = maxDelayMs;
    this.state = "idle"; // idle | connecting | open | reconnecting | closed
    this.model = null;
    this.project = null;
    this._socket = null;
    this._attempt = 0;
    this._retryTimer = null;
    this._queued = []; // {payload: Promise, resolve, reject}, not sent yet
    this._inFlight = []; // {resolve, reject, sentAt}, sent and awaiting replies, oldest first
    this._pumping = false;
    this._stopped = false;
    this._onOnline = () => this._retryNow();
    globalThis.addEventListener?.("online", this._onOnline);
  }

  /** Frames queued or awaiting replies: send a new camera frame only while this is small. */
  get pending() {
    return this._queued.length + this._inFlight.length;
  }

  /** Open (or reopen) the connection; also the way to retry after a refusal with a new token. */
  open() {
    this._stopped = false;
    clearTimeout(this._retryTimer);
    if (this._socket && this._socket.readyState <= WebSocket.OPEN) return;
    const url = new URL(this.url);
    if (this.token) url.searchParams.set("token", this.token);
    this._setState(this._attempt ? "reconnecting" : "connecting");
    const socket = new WebSocket(url.href);
    socket.binaryType = "arraybuffer";
    socket.onmessage = (event) => this._onMessage(event);
    socket.onclose = (event) => this._onClose(socket, event);
    this._socket = socket;
  }

  /** Close for good: nothing reconnects, everything waiting is rejected. */
  close() {
    this._stopped = true;
    clearTimeout(this._retryTimer);
    globalThis.removeEventListener?.("online", this._onOnline);
    this._socket?.close(1000);
    this._failAll("closed", "The client was closed.");
    this._setState("closed");
  }

  /**
   * Send one image and resolve with its prediction. `input`: Blob/File, ArrayBuffer or typed
   * array (encoded image bytes), a canvas, ImageData, ImageBitmap, <img> or <video> (its
   * current frame). Options: `type`/`quality` for encoding pixels (PNG for canvases and
   * ImageData, JPEG for video), `maxSide` to scale frames down, `topK` for more or fewer labels.
   */
  predict(input, options = {}) {
    if (this.state === "closed") {
      return Promise.reject(new ModelServerError("closed", "The connection is closed."));
    }
    return new Promise((resolve, reject) => {
      this._queued.push({ payload: encodeFrame(input, options), resolve, reject });
      this._pump();
    });
  }

  /**
   * Label an image sent on this connection: `id` is its prediction's `id`, `label` one of the
   * model's labels. Resolves with the `feedback_saved` reply; rejects with a ModelServerError
   * (`bad_request` for an id the server no longer keeps or a label not among the model's,
   * `busy` past its feedback rate). Ids belong to one connection: after a reconnect, earlier
   * ones name nothing. Frames sent with `topK` all have the id null, so only binary ones work.
   */
  feedback(id, label) {
    if (this.state === "closed") {
      return Promise.reject(new ModelServerError("closed", "The connection is closed."));
    }
    return new Promise((resolve, reject) => {
      const payload = Promise.resolve(JSON.stringify({ type: "feedback", id, label }));
      this._queued.push({ payload, resolve, reject });
      this._pump();
    });
  }

  /**
   * Turn the input preview on or off for frames sent from now on: their predictions carry
   * (or stop carrying) `input_preview`. Kept across reconnects. Resolves with the server's
   * `{type: "options", preview}` reply; while not connected, at once (the setting goes with
   * the next `ready`).
   */
  setPreview(on) {
    const preview = Boolean(on);
    this.preview = preview;
    if (this.state === "closed") {
      return Promise.reject(new ModelServerError("closed", "The connection is closed."));
    }
    if (!this._isReady()) return Promise.resolve({ type: "options", preview });
    return new Promise((resolve, reject) => {
      const payload = Promise.resolve(JSON.stringify({ type: "options", preview }));
      this._queued.push({ payload, resolve, reject });
      this._pump();
    });
  }

  /** Send the options now, ahead of any queued frame (a new connection starts without preview). */
  _sendOptions() {
    const fail = (error) => {
      // A dropped connection sends them again on its next `ready`.
      if (error.code !== "disconnected") this._emit("error", { code: error.code, message: `Options refused: ${error.message}` });
    };
    this._inFlight.push({ resolve: () => {}, reject: fail, sentAt: performance.now() });
    this._socket.send(JSON.stringify({ type: "options", preview: this.preview }));
  }

  async _pump() {
    if (this._pumping) return;
    this._pumping = true;
    try {
      while (this._queued.length && this._inFlight.length < this.maxInFlight && this._isReady()) {
        const job = this._queued[0];
        let payload;
        try {
          payload = await job.payload;
        } catch (error) {
          this._queued.shift();
          job.reject(new ModelServerError("bad_image", `Could not encode the image: ${error.message}`));
          continue;
        }
        if (!this._isReady() || this._queued[0] !== job) continue;
        this._queued.shift();
        this._inFlight.push({ resolve: job.resolve, reject: job.reject, sentAt: performance.now() });
        this._socket.send(payload);
      }
    } finally {
      this._pumping = false;
    }
  }

  _isReady() {
    return this.state === "open" && this._socket?.readyState === WebSocket.OPEN;
  }

  _onMessage(event) {
    let message;
    try {
      message = JSON.parse(event.data);
    } catch {
      return this._emit("error", { code: "bad_reply", message: "The server sent something that is not JSON." });
    }
    if (message.type === "ready") {
      this._attempt = 0;
      this.project = message.project;
      this.model = message.model;
      this._setState("open");
      if (this.preview) this._sendOptions();
      this._emit("ready", { project: message.project, model: message.model });
      this._pump();
    } else if (message.type === "model_changed") {
      this.model = message.model;
      this._emit("model_changed", { model: message.model });
    } else if (["prediction", "feedback_saved", "options", "error"].includes(message.type)) {
      const job = this._inFlight.shift();
      if (!job) return;
      const roundTripMs = performance.now() - job.sentAt;
      if (message.type !== "error") job.resolve({ ...message, roundTripMs });
      else job.reject(Object.assign(new ModelServerError(message.code, message.message, message.id), { roundTripMs }));
      this._pump();
    }
  }

  _onClose(socket, event) {
    if (socket !== this._socket) return;
    this._socket = null;
    for (const job of this._inFlight.splice(0)) {
      job.reject(new ModelServerError("disconnected", "The connection dropped before the reply came."));
    }
    if (this._stopped) return;
    const refusal = REFUSALS[event.code];
    if (refusal) {
      this._failAll(...refusal);
      this._setState("closed", { code: refusal[0], message: refusal[1] });
      return this._emit("error", { code: refusal[0], message: refusal[1] });
    }
    if (!this.reconnect) {
      this._failAll("disconnected", "The connection closed.");
      return this._setState("closed");
    }
    const delay = Math.min(this.maxDelayMs, this.minDelayMs * 2 ** this._attempt) * (0.8 + 0.4 * Math.random());
    this._attempt += 1;
    this._setState("reconnecting", { retryInMs: Math.round(delay), closeCode: event.code });
    this._retryTimer = setTimeout(() => this.open(), delay);
  }

  _retryNow() {
    if (this.state === "reconnecting" && !this._socket) this.open();
  }

  _failAll(code, message) {
    for (const job of this._queued.splice(0)) job.reject(new ModelServerError(code, message));
  }

  _setState(state, detail = {}) {
    this.state = state;
    this._emit("state", { state, ...detail });
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}

/** The bytes of one binary frame, or (with `topK`) the JSON text of a text frame. */
async function encodeFrame(input, { type, quality = 0.85, maxSide = 0, topK } = {}) {
  const bytes = await toBytes(input, { type, quality, maxSide });
  if (topK === undefined) return bytes;
  return JSON.stringify({ id: null, image: toBase64(new Uint8Array(bytes)), top_k: topK });
}

async function toBytes(input, { type, quality, maxSide }) {
  if (input instanceof Blob) return input.arrayBuffer();
  if (input instanceof ArrayBuffer) return input;
  if (ArrayBuffer.isView(input)) return input.buffer.slice(input.byteOffset, input.byteOffset + input.byteLength);
  const isVideo = typeof HTMLVideoElement !== "undefined" && input instanceof HTMLVideoElement;
  const canvas = drawToCanvas(input, maxSide);
  const blob = await canvasToBlob(canvas, type ?? (isVideo ? "image/jpeg" : "image/png"), quality);
  return blob.arrayBuffer();
}

function drawToCanvas(input, maxSide) {
  const isCanvas = input instanceof HTMLCanvasElement || (globalThis.OffscreenCanvas && input instanceof OffscreenCanvas);
  const width = input.videoWidth || input.naturalWidth || input.width;
  const height = input.videoHeight || input.naturalHeight || input.height;
  if (!width || !height) throw new Error("the image has no pixels yet");
  const scale = maxSide && Math.max(width, height) > maxSide ? maxSide / Math.max(width, height) : 1;
  if (isCanvas && scale === 1) return input;
  const canvas = document.createElement("canvas");
  canvas.width = Math.round(width * scale);
  canvas.height = Math.round(height * scale);
  const context = canvas.getContext("2d");
  if (input instanceof ImageData) {
    if (scale !== 1) throw new Error("maxSide does not apply to ImageData");
    context.putImageData(input, 0, 0);
  } else {
    context.drawImage(input, 0, 0, canvas.width, canvas.height);
  }
  return canvas;
}

function canvasToBlob(canvas, type, quality) {
  if (canvas.convertToBlob) return canvas.convertToBlob({ type, quality });
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("the canvas is empty"))), type, quality);
  });
}

function toBase64(bytes) {
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  return btoa(binary);
}
