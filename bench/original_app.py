"""The original service's design, as the benchmark's baseline: a plain ASGI app, no Django.

Every WebSocket connection downloads the model's `.keras` file from the bucket and loads it
with Keras; every binary frame is decoded with Pillow, resized with scikit-image, scaled to
-1..1 and run through `model.predict`, and answered with the top 5 labels. Blocking work runs
in threads (as a synchronous Channels consumer would), so the event loop keeps serving.

Configuration (environment): ORIGINAL_S3_ENDPOINT, ORIGINAL_S3_BUCKET, ORIGINAL_S3_KEY,
ORIGINAL_LABELS_FILE, and the usual AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / region.
Any HTTP request is answered 200, so a start-up check can poll it.
"""

import asyncio
import io
import json
import os
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import boto3
import keras
import numpy as np
from PIL import Image
from skimage.transform import resize

INPUT_SIZE = (224, 224)
TOP_K = 5


def load_labels() -> list[str]:
    """The label of each output class, one a line."""
    with open(os.environ["ORIGINAL_LABELS_FILE"], encoding="utf-8") as handle:
        return [line.strip() for line in handle if line.strip()]


def download_and_load_model():
    """Fetch the model file into a temp file and load it: once per connection."""
    client = boto3.client("s3", endpoint_url=os.environ["ORIGINAL_S3_ENDPOINT"])
    with tempfile.NamedTemporaryFile(suffix=".keras") as handle:
        client.download_fileobj(
            os.environ["ORIGINAL_S3_BUCKET"], os.environ["ORIGINAL_S3_KEY"], handle
        )
        handle.flush()
        return keras.saving.load_model(handle.name)


def predict(model, labels: list[str], data: bytes) -> dict:
    """Decode, resize, scale to -1..1, `model.predict`, top labels."""
    image = Image.open(io.BytesIO(data)).convert("RGB")
    pixels = resize(np.asarray(image), INPUT_SIZE)  # float64 in 0..1
    batch = (pixels * 2.0 - 1.0)[np.newaxis].astype(np.float32)
    scores = model.predict(batch, verbose=0)[0]
    best = np.argsort(-scores)[:TOP_K]
    return {
        "type": "prediction",
        "labels": [{"label": labels[i], "score": float(scores[i])} for i in best],
    }


async def websocket(receive, send) -> None:
    """Load the model on connect, then answer each binary frame in turn."""
    message = await receive()
    if message["type"] != "websocket.connect":
        return
    model = await asyncio.to_thread(download_and_load_model)
    labels = load_labels()
    await send({"type": "websocket.accept"})
    await send({"type": "websocket.send", "text": json.dumps({"type": "ready"})})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        data = message.get("bytes")
        if data is None:
            continue
        try:
            reply = await asyncio.to_thread(predict, model, labels, data)
        except Exception as exc:  # A bad frame costs its reply only.
            reply = {"type": "error", "message": str(exc)}
        await send({"type": "websocket.send", "text": json.dumps(reply)})


async def http(receive, send) -> None:
    """200 to any request: the process is up."""
    while (await receive()).get("more_body"):
        pass
    body = b'{"status": "ok"}'
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def application(scope, receive, send) -> None:
    """The ASGI entry point."""
    if scope["type"] == "websocket":
        await websocket(receive, send)
    elif scope["type"] == "http":
        await http(receive, send)
