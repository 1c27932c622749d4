"""The demo page's "Use this model" snippets, run as printed against a live daphne: the page
is fetched over HTTP, each snippet taken from it and only its placeholders replaced (the image
file, a private project's token)."""

import html
import json
import re
import shutil
import subprocess
import sys
import urllib.request

import pytest

from predictions.snippets import PHOTO_PLACEHOLDER, TOKEN_PLACEHOLDER
from tests import support
from tests.support import encode, solid_image

TIMEOUT = 30
# Each project is sent a colour of its own, so the right answer cannot be a leftover.
COLOUR_OF = {"colors": "red", "secret": "blue"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, trained):
    """daphne (production settings) serving the colours model (LiteRT, quick to check) for
    `colors` (public) and `secret` (private, with support.SECRET_TOKEN)."""
    folder = tmp_path_factory.mktemp("snippets")
    with support.migrated_env(folder, production=True) as env:
        support.register_colour_model(env, folder, trained.tflite, *COLOUR_OF)
        support.manage("shell", "-c", support.MAKE_SECRET_PRIVATE, env=env)
        server = support.DaphneServer(env, folder / "daphne.log")
        with support.running(server):
            yield server


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """A PNG of each project's colour, by slug."""
    folder = tmp_path_factory.mktemp("snippet-images")
    paths = {}
    for slug, colour in COLOUR_OF.items():
        paths[slug] = folder / f"{colour}.png"
        paths[slug].write_bytes(encode(solid_image(colour), "PNG"))
    return paths


def page_snippets(server, slug: str) -> dict[str, str]:
    """The snippets as the demo page prints them, by language."""
    with urllib.request.urlopen(f"{server.url}/projects/{slug}/", timeout=TIMEOUT) as response:
        page = response.read().decode()
    found = re.findall(r'<code id="[^"]+" data-snippet="([^"]+)">(.*?)</code>', page, re.S)
    return {language: html.unescape(code) for language, code in found}


def run_snippet(language: str, code: str) -> str:
    """Run a snippet as its reader would; its standard output."""
    if language == "curl":
        command = ["bash", "-c", code]
    else:
        command = [sys.executable, "-c", code]
    result = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, f"{language} failed:\n{code}\n{result.stderr}"
    return result.stdout


def top_label(language: str, output: str) -> str:
    if language == "curl":  # the prediction's JSON, as the server sent it
        return json.loads(output)["labels"][0]["label"]
    return output.split()[0]  # the Python snippets print the top label first


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
@pytest.mark.parametrize("slug", list(COLOUR_OF))
def test_the_snippets_answer_as_printed(server, images, slug):
    shown = page_snippets(server, slug)
    assert {"curl", "python", "python-websockets", "javascript"} == set(shown)
    assert f"{server.url}/api/projects/{slug}/predict" in shown["curl"]
    assert (TOKEN_PLACEHOLDER in shown["curl"]) == (slug == "secret")
    for language in ("curl", "python", "python-websockets"):
        code = shown[language].replace(PHOTO_PLACEHOLDER, str(images[slug]))
        code = code.replace(TOKEN_PLACEHOLDER, support.SECRET_TOKEN)
        output = run_snippet(language, code)
        assert top_label(language, output) == COLOUR_OF[slug], (language, output)


@pytest.mark.skipif(not shutil.which("curl"), reason="curl is not installed")
def test_a_private_projects_snippet_needs_the_real_token(server, images):
    code = page_snippets(server, "secret")["curl"].replace(PHOTO_PLACEHOLDER, str(images["secret"]))
    reply = json.loads(run_snippet("curl", code))  # YOUR_TOKEN left as it is
    assert reply["type"] == "error" and reply["code"] == "forbidden"
