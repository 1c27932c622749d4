"""Ready-to-copy code that calls one project of this server: what the demo page's "Use this
model" section shows, one function a language.

Each is filled with the server's absolute URL and the project's slug. A private project's
token is never written: it stays `YOUR_TOKEN`, as the image stays `photo.jpg` (or
`drawing.png`): the placeholders a reader replaces, and `tests/test_snippets.py` too.
"""

import json
from dataclasses import dataclass

TOKEN_PLACEHOLDER = "YOUR_TOKEN"
PHOTO_PLACEHOLDER = "photo.jpg"
DRAWING_PLACEHOLDER = "drawing.png"


@dataclass(frozen=True)
class Target:
    """The project a snippet calls, as seen from outside."""

    server: str  # "https://models.example.com", no trailing slash
    client_url: str  # the absolute URL of modelserver.js
    slug: str
    private: bool
    labelled: bool  # False: the model answers raw `outputs`
    drawing: bool = False  # its input is a drawing (the image placeholder says so)

    @property
    def image(self) -> str:
        return DRAWING_PLACEHOLDER if self.drawing else PHOTO_PLACEHOLDER

    @property
    def predict_url(self) -> str:
        return f"{self.server}/api/projects/{self.slug}/predict"

    @property
    def websocket_url(self) -> str:
        scheme, rest = self.server.split("://", 1)
        url = f"{'wss' if scheme == 'https' else 'ws'}://{rest}/ws/projects/{self.slug}/"
        return f"{url}?token={TOKEN_PLACEHOLDER}" if self.private else url


@dataclass(frozen=True)
class Snippet:
    language: str  # curl | python | python-websockets | javascript
    title: str
    code: str


def _q(text: str) -> str:
    """A string literal for Python and JavaScript alike (JSON's double-quoted form)."""
    return json.dumps(text)


def curl(target: Target) -> str:
    """POST the image file as a multipart form; the reply is the prediction's JSON."""
    lines = [f"curl -sS -F image=@{target.image}"]
    if target.private:
        lines.append(f'-H "Authorization: Bearer {TOKEN_PLACEHOLDER}"')
    lines.append(f'"{target.predict_url}"')
    return " \\\n  ".join(lines) + "\n"


def python_requests(target: Target) -> str:
    """The same over HTTP with `requests`, printing the top label."""
    call = [f"        {_q(target.predict_url)},", '        files={"image": image},']
    if target.private:
        call.append(f'        headers={{"Authorization": "Bearer {TOKEN_PLACEHOLDER}"}},')
    answer = (
        'top = prediction["labels"][0]\nprint(top["label"], top["score"])'
        if target.labelled
        else 'print(prediction["outputs"])'
    )
    return "\n".join(
        [
            "import requests",
            "",
            f'with open({_q(target.image)}, "rb") as image:',
            "    response = requests.post(",
            *call,
            "    )",
            "response.raise_for_status()",
            "prediction = response.json()",
            answer,
            "",
        ]
    )


def python_websockets(target: Target) -> str:
    """One image over the WebSocket with `websockets` (a connection for many frames)."""
    answer = 'prediction["labels"][0]["label"]' if target.labelled else 'prediction["outputs"]'
    return (
        "import json\n"
        "\n"
        "from websockets.sync.client import connect\n"
        "\n"
        f"with connect({_q(target.websocket_url)}) as socket:\n"
        '    ready = json.loads(socket.recv())  # {"type": "ready", "model": {...}}\n'
        f'    with open({_q(target.image)}, "rb") as image:\n'
        "        socket.send(image.read())  # a binary frame: one encoded image\n"
        "    prediction = json.loads(socket.recv())\n"
        f"    print({answer})\n"
    )


def javascript(target: Target) -> str:
    """In a web page, with the server's own client (an ES module, no dependencies)."""
    options = f", {{ token: {_q(TOKEN_PLACEHOLDER)} }}" if target.private else ""
    answer = "reply.labels" if target.labelled else "reply.outputs"
    return (
        f"import {{ connect }} from {_q(target.client_url)};\n"
        "\n"
        "// Pages on other sites need their origin among the project's allowed origins.\n"
        f"const client = connect({_q(target.server)}, {_q(target.slug)}{options});\n"
        'const input = document.querySelector("input[type=file]");\n'
        'input.addEventListener("change", async () => {\n'
        "  // Also a <canvas>, <img>, <video>, ImageData or Blob.\n"
        "  const reply = await client.predict(input.files[0]);\n"
        f"  console.log({answer});\n"
        "});\n"
    )


def snippets(target: Target) -> list[Snippet]:
    """Every snippet for the project, in the order the page shows them."""
    return [
        Snippet("curl", "curl", curl(target)),
        Snippet("python", "Python (requests)", python_requests(target)),
        Snippet("python-websockets", "Python (websockets)", python_websockets(target)),
        Snippet("javascript", "JavaScript (modelserver.js)", javascript(target)),
    ]
