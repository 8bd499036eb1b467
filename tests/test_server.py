"""The HTTP server: a real ``parakeet-runtime serve`` process on loopback, real HTTP clients."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
import soundfile

from parakeet_runtime.engine import BatchingOptions, Engine, sample_audio_path
from parakeet_runtime.engine.formats import to_srt, to_vtt


def _log_file() -> Any:
    """Server output goes to a file: a pipe that nobody reads would fill up and block the server."""
    return tempfile.TemporaryFile(mode="w+")


def _output(log: Any) -> str:
    log.seek(0)
    return str(log.read())[-4000:]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    port = _free_port()
    log = _log_file()
    proc = subprocess.Popen(
        [sys.executable, "-m", "parakeet_runtime.engine.cli", "serve", "--port", str(port), "--max-upload-mb", "2",
         "--log-level", "warning"],
        stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {_output(log)}")
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("server did not become healthy in 60 s")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise


@pytest.fixture(scope="module")
def reference() -> Engine:
    return Engine.load(batching=BatchingOptions(enabled=False))


def _post(url: str, data: bytes, *, name: str = "clip.wav",
          fields: dict[str, str | list[str]] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (name, data, "audio/wav")},
                      data={"model": "parakeet", **(fields or {})}, timeout=60)


def test_health_and_models(server: str) -> None:
    assert httpx.get(f"{server}/health").json()["status"] == "ok"
    models = httpx.get(f"{server}/v1/models").json()
    assert models["object"] == "list" and models["data"][0]["object"] == "model"


@pytest.mark.parametrize("fmt", ["json", "text", "srt", "vtt", "verbose_json"])
def test_every_response_format(server: str, reference: Engine, fmt: str) -> None:
    expected = reference.transcribe(sample_audio_path())
    fields: dict[str, str | list[str]] = {"response_format": fmt}
    if fmt == "verbose_json":
        fields["timestamp_granularities[]"] = ["word", "segment"]
    response = _post(server, sample_audio_path().read_bytes(), fields=fields)
    assert response.status_code == 200, response.text
    if fmt == "json":
        assert response.json() == {"text": expected.text}
    elif fmt == "text":
        assert response.text == expected.text
    elif fmt == "srt":
        assert response.text == to_srt(expected)
    elif fmt == "vtt":
        assert response.text == to_vtt(expected)
    else:
        body = response.json()
        assert body["text"] == expected.text
        assert body["duration"] == pytest.approx(expected.duration)
        assert [(w["word"], w["start"], w["end"]) for w in body["words"]] == [
            (w.text, w.start, w.end) for w in expected.words
        ]
        assert [(s["text"], s["start"], s["end"]) for s in body["segments"]] == [
            (s.text, s.start, s.end) for s in expected.segments
        ]


def test_openai_client_round_trip(server: str, reference: Engine) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    with sample_audio_path().open("rb") as handle:
        result = client.audio.transcriptions.create(model="parakeet", file=handle)
    assert result.text == reference.transcribe(sample_audio_path()).text
    with sample_audio_path().open("rb") as handle:
        verbose = client.audio.transcriptions.create(
            model="parakeet", file=handle, response_format="verbose_json", timestamp_granularities=["word"]
        )
    assert [w.word for w in verbose.words or []] == [w.text for w in reference.transcribe(sample_audio_path()).words]


def test_oversize_upload_is_413_and_garbage_is_400(server: str, reference: Engine, tmp_path: Path) -> None:
    big = _post(server, b"\x00" * (3 * 1024 * 1024))
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "payload_too_large"
    garbage = _post(server, b"this is not audio" * 100, name="garbage.wav")
    assert garbage.status_code == 400
    error = garbage.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "file" and error["message"]
    missing = httpx.post(f"{server}/v1/audio/transcriptions", data={"model": "x"}, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    bad_format = _post(server, sample_audio_path().read_bytes(), fields={"response_format": "xml"})
    assert bad_format.status_code == 400
    # ... and the server keeps serving.
    assert _post(server, sample_audio_path().read_bytes()).json()["text"] == reference.transcribe(
        sample_audio_path()
    ).text


def test_33_clients_x_10_requests(server: str, reference: Engine, tmp_path: Path) -> None:
    samples, rate = soundfile.read(sample_audio_path(), dtype="float32")
    clips = []
    for i in range(6):  # distinct audio per request kind, so a mixed-up response is caught
        path = tmp_path / f"clip{i}.wav"
        soundfile.write(path, samples[: len(samples) - i * 2371], rate)
        clips.append((path.read_bytes(), reference.transcribe(path).text))

    def client(c: int) -> list[tuple[int, bool]]:
        outcomes = []
        with httpx.Client(timeout=120) as http:
            for r in range(10):
                data, text = clips[(c + r) % len(clips)]
                response = http.post(f"{server}/v1/audio/transcriptions", files={"file": ("a.wav", data)},
                                     data={"model": "parakeet"})
                outcomes.append((response.status_code, response.status_code == 200 and
                                 json.loads(response.text)["text"] == text))
        return outcomes

    with ThreadPoolExecutor(33) as pool:
        results = [o for outcomes in pool.map(client, range(33)) for o in outcomes]
    assert len(results) == 330
    assert [status for status, _ in results].count(200) == 330
    assert all(same for _, same in results)


# --- the examples ----------------------------------------------------------------------------------------

REPO = Path(__file__).resolve().parent.parent


def test_example_openai_client_and_curl(server: str, reference: Engine) -> None:
    expected = reference.transcribe(sample_audio_path())
    out = subprocess.run([sys.executable, REPO / "examples" / "openai_client.py", f"{server}/v1",
                          str(sample_audio_path())], capture_output=True, text=True, timeout=60, check=True).stdout
    assert out.splitlines()[0] == expected.text
    assert len(out.splitlines()) == 1 + len(expected.words)
    out = subprocess.run([REPO / "examples" / "curl.sh", server, str(sample_audio_path())], capture_output=True,
                         text=True, timeout=60, check=True).stdout
    assert out.splitlines()[0] == expected.text
    assert json.loads(out.splitlines()[1])["text"] == expected.text


def test_example_mount_in_fastapi(reference: Engine) -> None:
    port = _free_port()
    log = _log_file()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "examples.mount_in_fastapi:app", "--port", str(port),
                             "--log-level", "warning"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT,
                            text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                own = httpx.get(f"{url}/", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, _output(log)
                assert time.monotonic() < deadline
                time.sleep(0.2)
        assert own.json()["service"] == "my service"
        response = httpx.post(f"{url}/asr/v1/audio/transcriptions",
                              files={"file": ("s.wav", sample_audio_path().read_bytes())}, data={"model": "p"},
                              timeout=60)
        assert response.status_code == 200
        assert response.json()["text"] == reference.transcribe(sample_audio_path()).text
        assert httpx.get(f"{url}/asr/health").status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_overload_gets_503_with_retry_after(reference: Engine) -> None:
    port = _free_port()
    log = _log_file()
    proc = subprocess.Popen(
        [sys.executable, "-m", "parakeet_runtime.engine.cli", "serve", "--port", str(port), "--max-in-flight", "1",
         "--log-level", "warning"], stdout=log, stderr=subprocess.STDOUT, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.2)
        data = sample_audio_path().read_bytes()

        def call(_: int) -> httpx.Response:
            return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": ("a.wav", data)},
                              data={"model": "p"}, timeout=60)

        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(call, range(48)))
        statuses = [r.status_code for r in responses]
        assert set(statuses) <= {200, 503}
        assert 503 in statuses and 200 in statuses
        for r in responses:
            if r.status_code == 503:
                assert r.headers["retry-after"] and r.json()["error"]["code"] == "overloaded"
            else:
                assert r.json()["text"] == reference.transcribe(sample_audio_path()).text
        assert call(0).status_code == 200  # recovers once the burst is over
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_client_disconnect_cancels_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process ASGI: the client goes away while its request waits; the work is cancelled, not leaked."""
    import asyncio

    from parakeet_runtime.engine.server import create_app

    engine = Engine.load(batching=BatchingOptions(enabled=False))
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def slow(_self: Engine, _audio: object) -> object:
        started.set()
        try:
            await asyncio.sleep(30)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("not cancelled")

    monkeypatch.setattr(Engine, "transcribe_async", slow)
    app = create_app(engine)
    boundary = "xyz"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.wav\"\r\n\r\n").encode()
    body += sample_audio_path().read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    sent: list[dict[str, object]] = []

    async def scenario() -> None:
        messages = [{"type": "http.request", "body": body, "more_body": False}]

        async def receive() -> dict[str, object]:
            if messages:
                return messages.pop(0)
            await started.wait()
            return {"type": "http.disconnect"}

        async def send(message: MutableMapping[str, Any]) -> None:
            sent.append(dict(message))

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/audio/transcriptions", "raw_path": b"/v1/audio/transcriptions",
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
                 "headers": [(b"content-type", f"multipart/form-data; boundary={boundary}".encode()),
                             (b"content-length", str(len(body)).encode())]}
        await asyncio.wait_for(app(scope, receive, send), timeout=20)

    asyncio.run(scenario())
    assert cancelled.is_set()
    assert sent and sent[0]["status"] == 499
