// The plain demo page: draw or upload an image, send it over the WebSocket, show the labels.
const demo = document.getElementById("demo");
const statusLine = document.getElementById("status");
const labelList = document.getElementById("labels");
const timing = document.getElementById("timing");
const errorLine = document.getElementById("error");
const canvas = document.getElementById("canvas");
const ctx = canvas.getContext("2d");

const token = new URLSearchParams(location.search).get("token");
const scheme = location.protocol === "https:" ? "wss" : "ws";
let url = `${scheme}://${location.host}/ws/projects/${demo.dataset.slug}/`;
if (token) url += `?token=${encodeURIComponent(token)}`;

let socket = null;
let retryDelay = 500;
const sentAt = [];  // send times of frames awaiting replies, oldest first

function setStatus(state, text) {
  statusLine.dataset.state = state;
  statusLine.textContent = text;
}

function describeModel(model) {
  if (!model) return "no model in service yet";
  const [h, w, c] = model.input_shape;
  return `model version ${model.version}, input ${h}x${w}x${c}`;
}

function connect() {
  socket = new WebSocket(url);
  socket.binaryType = "arraybuffer";
  socket.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "ready") {
      retryDelay = 500;
      setStatus("open", `Connected: ${describeModel(message.model)}`);
    } else if (message.type === "model_changed") {
      setStatus("open", `Model changed: ${describeModel(message.model)}`);
    } else if (message.type === "prediction" || message.type === "error") {
      const rtt = performance.now() - (sentAt.shift() ?? performance.now());
      timing.textContent = `Round trip ${rtt.toFixed(0)} ms`;
      if (message.type === "prediction") showPrediction(message);
      else errorLine.textContent = `${message.code}: ${message.message}`;
    }
  };
  socket.onclose = (event) => {
    sentAt.length = 0;
    if (event.code === 4403) return setStatus("closed", "This project is private: add ?token=… to the address.");
    if (event.code === 4404) return setStatus("closed", "No such project.");
    setStatus("closed", `Disconnected; retrying in ${(retryDelay / 1000).toFixed(1)} s`);
    setTimeout(connect, retryDelay);
    retryDelay = Math.min(retryDelay * 2, 10000);
  };
}

function showPrediction(message) {
  errorLine.textContent = "";
  labelList.replaceChildren();
  const rows = message.labels ?? [{ label: JSON.stringify(message.outputs), score: NaN }];
  for (const { label, score } of rows) {
    const item = document.createElement("li");
    item.textContent = Number.isNaN(score) ? label : `${label}: ${(score * 100).toFixed(1)}%`;
    labelList.append(item);
  }
}

function send(data) {
  if (!socket || socket.readyState !== WebSocket.OPEN) return;
  sentAt.push(performance.now());
  socket.send(data);
}

// Drawing: dark strokes on a white canvas; a frame after each stroke.
function clearCanvas() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
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
});
canvas.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  ctx.lineTo(...point(event));
  ctx.stroke();
});
canvas.addEventListener("pointerup", () => {
  drawing = false;
  canvas.toBlob((blob) => blob.arrayBuffer().then(send), "image/png");
});
document.getElementById("clear").addEventListener("click", () => {
  clearCanvas();
  labelList.replaceChildren();
});

// Upload: show the image and send its bytes as they are.
document.getElementById("upload").addEventListener("change", async (event) => {
  const file = event.target.files[0];
  if (!file) return;
  document.getElementById("preview").src = URL.createObjectURL(file);
  send(await file.arrayBuffer());
});

connect();
