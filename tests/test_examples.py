"""Every script in examples/ runs against the bundled demo model and the sample clip.

A new script in examples/ fails ``test_every_example_is_run`` until a test here runs it.
"""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from parakeet_runtime.engine import BatchingOptions, Engine, Transcript, sample_audio_path

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"
START_TIMEOUT_S = 60
RUN_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
RUN = {"curl.sh", "openai_client.py", "mount_in_fastapi.py"}
"""The scripts the tests below run."""


def test_every_example_is_run() -> None:
    scripts = {path.name for path in EXAMPLES.iterdir() if path.is_file() and not path.name.startswith(".")}
    assert scripts == RUN, f"examples without a test: {sorted(scripts - RUN)}; tested but gone: {sorted(RUN - scripts)}"


@pytest.fixture(scope="module")
def expected() -> Transcript:
    return Engine.load(batching=BatchingOptions(enabled=False)).transcribe(sample_audio_path())


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return int(exc.code), b""
    except (urllib.error.URLError, OSError):
        return 0, b""


@contextlib.contextmanager
def _running(command: Sequence[str], ready_url: str) -> Iterator[None]:
    """Run a server on 127.0.0.1 until ``ready_url`` answers 200 (bounded); SIGTERM it afterwards."""
    with tempfile.TemporaryFile("w+") as log:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, text=True)

        def output() -> str:
            log.seek(0)
            return log.read()[-4000:]

        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while _get(ready_url)[0] != 200:
                assert proc.poll() is None, f"the server exited with {proc.returncode}:\n{output()}"
                assert time.monotonic() < deadline, f"not ready within {START_TIMEOUT_S} s:\n{output()}"
                time.sleep(0.2)
            yield
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT_S)
                raise


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """``parakeet-runtime serve`` with the bundled demo model, as the examples' docstrings start it."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "serve", "--host", "127.0.0.1", "--port",
               str(port), "--log-level", "warning"]
    with _running(command, f"{url}/health"):
        yield url


def _run(command: Sequence[str]) -> str:
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert result.returncode == 0, f"{command} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_curl(server: str, expected: Transcript) -> None:
    lines = _run(["bash", str(EXAMPLES / "curl.sh"), server, str(sample_audio_path())]).splitlines()
    assert lines[0] == expected.text
    verbose = json.loads(lines[1])
    assert verbose["text"] == expected.text
    assert [word["word"] for word in verbose["words"]] == [word.text for word in expected.words]


def test_openai_client(server: str, expected: Transcript) -> None:
    lines = _run([sys.executable, str(EXAMPLES / "openai_client.py"), f"{server}/v1",
                  str(sample_audio_path())]).splitlines()
    assert lines[0] == expected.text
    assert [line.split()[-1] for line in lines[1:]] == [word.text for word in expected.words]


def test_mount_in_fastapi(expected: Transcript) -> None:
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "uvicorn", "examples.mount_in_fastapi:app", "--host", "127.0.0.1", "--port",
               str(port), "--log-level", "warning"]
    with _running(command, f"{url}/asr/health"):
        status, body = _get(f"{url}/")
        assert status == 200 and json.loads(body)["asr"] == "/asr/v1/audio/transcriptions"
        boundary = "parakeet-example-boundary"
        form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"model\"\r\n\r\nparakeet\r\n"
                f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"clip.wav\"\r\n"
                "Content-Type: audio/wav\r\n\r\n").encode() + sample_audio_path().read_bytes() + \
            f"\r\n--{boundary}--\r\n".encode()
        request = urllib.request.Request(f"{url}/asr/v1/audio/transcriptions", data=form, method="POST",
                                         headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        with urllib.request.urlopen(request, timeout=RUN_TIMEOUT_S) as response:
            assert json.loads(response.read())["text"] == expected.text
