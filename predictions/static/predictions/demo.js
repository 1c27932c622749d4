// The demo page: webcam, upload and drawing, all sent through the embeddable client.
import { connect } from "./modelserver.js";

const $ = (id) => document.getElementById(id);
const demo = $("demo");
const slug = demo.dataset.slug;
const TOKEN_KEY = `modelserver-token:${slug}`;
const CAMERA_INTERVAL_MS = 100; // at most 10 frames/s, fewer when replies lag

// --- Connection -------------------------------------------------------------------------------

const token = new URLSearchParams(location.search).get("token") ?? sessionStorage.getItem(TOKEN_KEY);
// "What the model sees": each reply carries the model's input as a PNG while the box is ticked.
const client = connect(location.origin, slug, { token, maxInFlight: 2, preview: $("preview-toggle").checked });

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status").textContent = text;
}

function describeModel(model) {
  if (!model) return "no model in service yet";
  const [h, w, c] = model.input_shape;
  const labels = model.labels.length ? `${model.labels.length} labels` : "raw outputs";
  return `version ${model.version}, ${labels}, input ${h}x${w}x${c}`;
}

client.addEventListener("state", ({ detail }) => {
  if (detail.state !== "open") hideFeedback(); // ids name frames of one connection only
  if (detail.state === "connecting") setStatus("connecting", "Connecting…");
  if (detail.state === "reconnecting") {
    const delay = detail.retryInMs === undefined ? "" : ` in ${(detail.retryInMs / 1000).toFixed(1)} s`;
    setStatus("reconnecting", `Disconnected; reconnecting${delay}…`);
  }
  if (detail.state === "closed") setStatus("closed", detail.message ?? "Disconnected.");
});

client.addEventListener("ready", ({ detail }) => {
  setStatus("open", `Connected: ${describeModel(detail.model)}`);
  $("token-form").hidden = true;
  $("model-info").textContent = `Model ${describeModel(detail.model)}`;
  if (client.token) sessionStorage.setItem(TOKEN_KEY, client.token);
  setFeedbackLabels(detail.model);
});

client.addEventListener("model_changed", ({ detail }) => {
  $("notice").textContent = `Model changed: now ${describeModel(detail.model)}.`;
  $("model-info").textContent = `Model ${describeModel(detail.model)}`;
  setStatus("open", `Connected: ${describeModel(detail.model)}`);
  setFeedbackLabels(detail.model);
});

client.addEventListener("error", ({ detail }) => {
  if (detail.code === "forbidden") {
    sessionStorage.removeItem(TOKEN_KEY);
    $("token-form").hidden = false;
    $("token-input").focus();
  }
});

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  client.token = $("token-input").value.trim();
  client.open();
});

if (demo.dataset.public === "false" && !token) {
  $("token-form").hidden = false;
}

// --- Answers ----------------------------------------------------------------------------------

const replyTimes = []; // when recent replies arrived, for frames per second

async function send(input, options) {
  try {
    show(await client.predict(input, options));
  } catch (error) {
    if (error.code === "disconnected" || error.code === "closed") return;
    $("error").textContent = describeError(error);
  }
}

function describeError(error) {
  const what = {
    bad_image: "The server could not read this image",
    too_large: "The image is too large",
    bad_request: "The request was malformed",
    bad_shape: "The input does not fit the model",
    model_unavailable: "The model is not available right now",
    busy: "The server is busy; frames were dropped",
  }[error.code];
  return what ? `${what}: ${error.message}` : error.message;
}

function show(reply) {
  $("error").textContent = "";
  const list = $("labels");
  list.dataset.modelVersion = reply.model_version;
  list.replaceChildren(
    ...(reply.labels ?? []).map(({ label, score }) => {
      const item = document.createElement("li");
      const name = Object.assign(document.createElement("span"), { className: "label", textContent: label });
      const bar = Object.assign(document.createElement("span"), { className: "bar" });
      bar.style.setProperty("--score", score);
      const value = Object.assign(document.createElement("span"), {
        className: "score",
        textContent: `${(score * 100).toFixed(1)}%`,
      });
      item.append(name, bar, value);
      return item;
    }),
  );
  showModelInput(reply.input_preview);
  if (reply.outputs) {
    const item = document.createElement("li");
    item.textContent = `Outputs: ${JSON.stringify(reply.outputs)}`;
    list.append(item);
  }
  const now = performance.now();
  replyTimes.push(now);
  while (replyTimes.length && now - replyTimes[0] > 3000) replyTimes.shift();
  $("rtt").textContent = `Round trip ${reply.roundTripMs.toFixed(0)} ms`;
  $("fps").textContent = replyTimes.length > 1 ? `· ${(((replyTimes.length - 1) * 1000) / (now - replyTimes[0])).toFixed(1)} frames/s` : "";
  $("rtt").dataset.replies = String(Number($("rtt").dataset.replies ?? 0) + 1);
  offerFeedback(reply);
}

function showModelInput(dataUrl) {
  const wanted = Boolean(dataUrl) && $("preview-toggle").checked;
  if (wanted) $("model-input").src = dataUrl;
  $("model-view").hidden = !wanted;
}

$("preview-toggle").addEventListener("change", (event) => {
  const on = event.target.checked;
  if (!on) showModelInput(null);
  client.setPreview(on).catch(() => {}); // a dropped connection sends it again on reconnecting
});

// --- Feedback: "that's right" or "it's actually ...", for the image shown last ----------------

let feedbackFor = null; // {id, label}: the reply the buttons speak about

function setFeedbackLabels(model) {
  hideFeedback();
  $("feedback-label").replaceChildren(...(model?.labels ?? []).map((label) => new Option(label, label)));
}

function offerFeedback(reply) {
  const top = reply.labels?.[0]?.label;
  if (top === undefined || !$("feedback-label").options.length) return hideFeedback();
  feedbackFor = { id: reply.id, label: top };
  const select = $("feedback-label");
  if (select.value === top) select.selectedIndex = (select.selectedIndex + 1) % select.options.length;
  $("feedback").hidden = false;
}

function hideFeedback() {
  feedbackFor = null;
  $("feedback").hidden = true;
  setFeedbackStatus("", "");
}

function setFeedbackStatus(state, text) {
  $("feedback-status").dataset.state = state;
  $("feedback-status").textContent = text;
}

async function sendFeedback(label) {
  if (!feedbackFor) return;
  setFeedbackStatus("saving", "Saving…");
  try {
    await client.feedback(feedbackFor.id, label);
    setFeedbackStatus("saved", `Thanks: saved as “${label}”.`);
  } catch (error) {
    setFeedbackStatus("error", `Not saved: ${error.message}`);
  }
}

$("feedback-right").addEventListener("click", () => sendFeedback(feedbackFor?.label));
$("feedback-actually").addEventListener("click", () => sendFeedback($("feedback-label").value));

// --- Modes ------------------------------------------------------------------------------------

function selectMode(mode) {
  for (const tab of document.querySelectorAll("[role=tab]")) tab.setAttribute("aria-selected", String(tab.dataset.mode === mode));
  for (const pane of document.querySelectorAll(".pane")) pane.hidden = pane.dataset.mode !== mode;
  if (mode !== "webcam") stopCamera();
  demo.dataset.mode = mode;
}
for (const tab of document.querySelectorAll("[role=tab]")) tab.addEventListener("click", () => selectMode(tab.dataset.mode));

// --- Webcam: a frame every CAMERA_INTERVAL_MS while fewer than two wait for replies ----------

const video = $("camera-video");
let stream = null;
let cameraTimer = null;

async function startCamera(deviceId) {
  stopCamera();
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: deviceId ? { deviceId: { exact: deviceId } } : { facingMode: "environment" },
      audio: false,
    });
  } catch (error) {
    $("error").textContent = `The camera could not be opened: ${error.message}`;
    return;
  }
  video.srcObject = stream;
  $("camera-toggle").textContent = "Stop camera";
  await listCameras(stream.getVideoTracks()[0]?.getSettings().deviceId);
  cameraTimer = setInterval(() => {
    if (video.readyState >= 2 && client.state === "open" && client.pending < 2) {
      send(video, { type: "image/jpeg", quality: 0.8, maxSide: 640 });
    }
  }, CAMERA_INTERVAL_MS);
}

function stopCamera() {
  clearInterval(cameraTimer);
  cameraTimer = null;
  for (const track of stream?.getTracks() ?? []) track.stop();
  stream = null;
  video.srcObject = null;
  $("camera-toggle").textContent = "Start camera";
}

async function listCameras(currentId) {
  const cameras = (await navigator.mediaDevices.enumerateDevices()).filter((d) => d.kind === "videoinput");
  $("camera-choice").hidden = cameras.length < 2;
  $("camera-select").replaceChildren(
    ...cameras.map((camera, i) => new Option(camera.label || `Camera ${i + 1}`, camera.deviceId, false, camera.deviceId === currentId)),
  );
}

$("camera-toggle").addEventListener("click", () => (stream ? stopCamera() : startCamera()));
$("camera-select").addEventListener("change", (event) => startCamera(event.target.value));
if (!navigator.mediaDevices?.getUserMedia) {
  $("camera-toggle").disabled = true;
  $("camera-toggle").textContent = "No camera access on this page (it needs HTTPS)";
}

// --- Upload: choose or drop an image -----------------------------------------------------------

function sendFile(file) {
  if (!file) return;
  $("preview").src = URL.createObjectURL(file);
  send(file);
}
$("upload").addEventListener("change", (event) => sendFile(event.target.files[0]));
const dropzone = $("dropzone");
dropzone.addEventListener("dragover", (event) => {
  event.preventDefault();
  dropzone.classList.add("over");
});
dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
dropzone.addEventListener("drop", (event) => {
  event.preventDefault();
  dropzone.classList.remove("over");
  sendFile(event.dataTransfer.files[0]);
});

// --- Draw: dark strokes on a white canvas, a frame after each stroke -----------------------------

const canvas = $("canvas");
const ctx = canvas.getContext("2d");
function clearCanvas() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  $("labels").replaceChildren();
  showModelInput(null);
  hideFeedback();
}
ctx.lineWidth = 18;
ctx.lineCap = "round";
ctx.lineJoin = "round";
ctx.strokeStyle = "#000";
clearCanvas();

let drawing = false;
function point(event) {
  const box = canvas.getBoundingClientRect();
  return [(event.clientX - box.left) * (canvas.width / box.width), (event.clientY - box.top) * (canvas.height / box.height)];
}
canvas.addEventListener("pointerdown", (event) => {
  drawing = true;
  canvas.setPointerCapture(event.pointerId);
  ctx.beginPath();
  ctx.moveTo(...point(event));
  ctx.lineTo(...point(event));
  ctx.stroke();
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  ctx.lineTo(...point(event));
  ctx.stroke();
});
for (const type of ["pointerup", "pointercancel"]) {
  canvas.addEventListener(type, () => {
    if (!drawing) return;
    drawing = false;
    send(canvas, { type: "image/png" });
  });
}
$("clear").addEventListener("click", clearCanvas);

// --- "Use this model": copy a snippet ----------------------------------------------------------

async function copySnippet(button) {
  const code = $(button.dataset.copy);
  try {
    await navigator.clipboard.writeText(code.textContent);
    button.textContent = "Copied";
    $("copy-status").textContent = "Copied to the clipboard.";
  } catch {
    // No clipboard (a page over plain HTTP, or permission refused): select it to copy by hand.
    getSelection().selectAllChildren(code);
    button.textContent = "Selected";
    $("copy-status").textContent = "Selected: press Ctrl+C (⌘C) to copy.";
  }
  setTimeout(() => (button.textContent = "Copy"), 2000);
}
for (const button of document.querySelectorAll("button[data-copy]")) {
  button.addEventListener("click", () => copySnippet(button));
}

selectMode(demo.dataset.mode);
