"""The HTTP server against hostile and careless clients: slow request headers, slow uploads, lying Content-Length,
idle connections, too many connections, shutdown with work in flight, missing or wrong API keys, browsers from
other origins and clients that hang up. Loopback only (127.0.0.1); every wait is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn

from parakeet_runtime.engine import BatchingOptions, Engine, EngineClosedError, OptionsError, sample_audio_path
from parakeet_runtime.engine.serving.cli import API_KEY_ENV, parse_args
from parakeet_runtime.engine.serving.http11 import protocol_class, uvicorn_settings
from parakeet_runtime.engine.serving.options import ServerOptions
from parakeet_runtime.engine.serving.server import create_app
from tests.test_server import _free_port, _serve

BODY_TIMEOUT_S = 3.0
HEADER_TIMEOUT_S = 2.0
KEEP_ALIVE_S = 1
MAX_CONNECTIONS = 12
MAX_IN_FLIGHT = 2
SLOW_CLIENTS = 8


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    process, url = _serve("--max-in-flight", str(MAX_IN_FLIGHT), "--body-timeout-s", str(BODY_TIMEOUT_S),
                          "--header-timeout-s", str(HEADER_TIMEOUT_S),
                          "--keep-alive-s", str(KEEP_ALIVE_S), "--max-connections", str(MAX_CONNECTIONS))
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def reference() -> Engine:
    return Engine.load(batching=BatchingOptions(enabled=False))


def _address(url: str) -> tuple[str, int]:
    host, port = url.removeprefix("http://").split(":")
    return host, int(port)


def _upload_head(url: str, content_length: int) -> bytes:
    host, port = _address(url)
    return (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}:{port}\r\n"
            f"Content-Type: multipart/form-data; boundary=zz\r\nContent-Length: {content_length}\r\n\r\n").encode()


def _read_response(sock: socket.socket, deadline: float) -> bytes:
    """Everything the server sends until it closes the connection (or ``deadline``, monotonic)."""
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def _status_and_error(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)["error"]


# --- slow request headers -------------------------------------------------------------------------------------


def _closed_by_server(sock: socket.socket, deadline: float) -> tuple[bytes, float | None]:
    """What the server sends, and when (monotonic) it closed the connection; ``None`` if still open at
    ``deadline``."""
    data = b""
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except TimeoutError:
            break
        except ConnectionResetError:
            return data, time.monotonic()
        if not chunk:
            return data, time.monotonic()
        data += chunk
    return data, None


def test_slow_headers_cannot_hold_connections(server: str, reference: Engine) -> None:
    """``--header-timeout-s 2``: eight sockets sending their request headers at 1 byte/s (never finishing the
    header block) and two that connect and send nothing are all closed by the server within the header timeout
    (plus a margin for a shared CPU); the trickling ones get a 408 in OpenAI's error shape first. A good request
    is served meanwhile."""
    stop = threading.Event()
    host, port = _address(server)
    opened = time.monotonic()
    trickling = [socket.create_connection((host, port), timeout=10) for _ in range(SLOW_CLIENTS)]
    silent = [socket.create_connection((host, port), timeout=10) for _ in range(2)]

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in trickling:
                with contextlib.suppress(OSError):  # the server closed it
                    sock.sendall(b"a")

    try:
        for sock in trickling:
            sock.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}:{port}\r\nX-Slow: ".encode())
        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        good = httpx.post(f"{server}/v1/audio/transcriptions",
                          files={"file": ("a.wav", sample_audio_path().read_bytes())}, data={"model": "p"},
                          timeout=HEADER_TIMEOUT_S * 5)
        assert good.status_code == 200, good.text
        assert good.json()["text"] == reference.transcribe(sample_audio_path()).text
        deadline = opened + HEADER_TIMEOUT_S + 4
        trickled = [_closed_by_server(sock, deadline) for sock in trickling]
        silenced = [_closed_by_server(sock, deadline) for sock in silent]
    finally:
        stop.set()
        for sock in trickling + silent:
            sock.close()
    for _, closed in trickled + silenced:
        assert closed is not None, "a slow-header connection was still open after the header timeout"
        assert HEADER_TIMEOUT_S * 0.9 <= closed - opened < HEADER_TIMEOUT_S + 4
    for raw, _ in trickled:
        status, error = _status_and_error(raw)
        assert status == 408 and b"connection: close" in raw.lower()
        assert error == {"message": f"the request headers did not arrive within {HEADER_TIMEOUT_S:g} s",
                         "type": "invalid_request_error", "param": None, "code": "request_timeout"}
    assert [raw for raw, _ in silenced] == [b"", b""]  # nothing was asked, nothing is answered


def _one_response(sock: socket.socket) -> bytes:
    """One HTTP response with a Content-Length (head and body may come in separate packets)."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {raw!r}"
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in head.lower().split(b"\r\n")
                  if line.startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed mid-response: {raw!r}"
        body += chunk
    return head + b"\r\n\r\n" + body


def test_header_timeout_is_independent_of_keep_alive(reference: Engine) -> None:
    """In-process uvicorn with a keep-alive (3 s) longer than the header timeout (1 s): a kept-alive connection
    idle for longer than the header timeout still serves its next request (the idle time is keep-alive's), while
    a request whose headers then trickle in is cut off one header timeout after its first byte (uvicorn's own
    keep-alive timer stops at the first byte and would never fire)."""
    options = ServerOptions(header_timeout_s=1.0, keep_alive_s=3)
    with _ThreadedServer(create_app(reference, options), options) as running:
        health = f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\n\r\n".encode()
        with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
            sock.sendall(health)
            first = _one_response(sock)
            time.sleep(1.6)  # idle beyond the header timeout, within keep-alive
            sock.sendall(health)
            second = _one_response(sock)
            assert first.startswith(b"HTTP/1.1 200") and second.startswith(b"HTTP/1.1 200"), (first, second)
            time.sleep(0.5)
            started = time.monotonic()
            for byte in b"GET /hea":
                sock.sendall(bytes([byte]))
                time.sleep(0.05)
            raw, closed = _closed_by_server(sock, started + 5)
    assert closed is not None and 0.9 <= closed - started < 3.0, closed and closed - started
    status, error = _status_and_error(raw)
    assert status == 408 and error["code"] == "request_timeout"


def test_a_partial_head_pipelined_after_a_request_is_timed_too(reference: Engine) -> None:
    """Found by fuzzing the server: a request sent with the first bytes of the next in one write was answered, and
    the partial head then held the connection until the keep-alive timeout (no byte arrived later to arm the
    header timer). It is now cut off one header timeout after the response, with a 408."""
    options = ServerOptions(header_timeout_s=1.0, keep_alive_s=30)
    with _ThreadedServer(create_app(reference, options), options) as running, \
            socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: 127.0.0.1:{running.port}\r\n\r\nGET /hea".encode())
        raw, closed = _closed_by_server(sock, started + 10)
    assert raw.startswith(b"HTTP/1.1 200"), raw
    assert closed is not None and 0.9 <= closed - started < 4.0, closed and closed - started
    status, error = _status_and_error(b"HTTP/1.1" + raw.split(b"HTTP/1.1")[-1])
    assert status == 408 and error["code"] == "request_timeout"


def test_the_header_timeout_stops_once_the_headers_are_complete(reference: Engine) -> None:
    """A body slower than the header timeout is the body timeout's business: the upload is answered 408 by the
    app after ``body_timeout_s`` (in its body-timeout words), not cut off at ``header_timeout_s``."""
    options = ServerOptions(header_timeout_s=0.5, body_timeout_s=1.5)
    with _ThreadedServer(create_app(reference, options), options) as running, \
            socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
        started = time.monotonic()
        sock.sendall(_upload_head(running.url, 1000) + b"--zz\r\n")
        raw, closed = _closed_by_server(sock, started + 10)
    assert closed is not None and 1.5 * 0.9 <= closed - started < 6
    status, error = _status_and_error(raw)
    assert status == 408 and "request body did not arrive within 1.5 s" in error["message"]


@pytest.mark.parametrize("bad", [0.0, -1.0, math.nan, math.inf, True])
def test_protocol_class_refuses_a_bad_timeout(bad: Any) -> None:
    with pytest.raises(ValueError, match="header_timeout_s must be a positive number of seconds"):
        protocol_class(bad)


# --- slow and lying uploads -----------------------------------------------------------------------------------


def test_slow_uploads_cannot_starve_a_good_request(server: str, reference: Engine) -> None:
    """``--max-in-flight 2``: eight sockets uploading at 1 byte/s do not hold the two slots; a good request is
    served meanwhile, quickly, and each slow upload gets a 408 in OpenAI's error shape once the body timeout
    passes (then its connection is closed)."""
    stop = threading.Event()
    sockets = [socket.create_connection(_address(server), timeout=10) for _ in range(SLOW_CLIENTS)]

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in sockets:
                with contextlib.suppress(OSError):  # the server answered 408 and closed it
                    sock.sendall(b"x")

    try:
        for sock in sockets:
            sock.sendall(_upload_head(server, 100_000) + b"x")
        trickler = threading.Thread(target=trickle, daemon=True)
        trickler.start()
        time.sleep(0.3)  # let the slow uploads reach the app before the good request
        started = time.monotonic()
        good = httpx.post(f"{server}/v1/audio/transcriptions",
                          files={"file": ("a.wav", sample_audio_path().read_bytes())}, data={"model": "p"},
                          timeout=BODY_TIMEOUT_S * 5)
        elapsed = time.monotonic() - started
        assert good.status_code == 200, good.text
        assert good.json()["text"] == reference.transcribe(sample_audio_path()).text
        assert elapsed < BODY_TIMEOUT_S, f"the good request waited {elapsed:.2f} s behind the slow uploads"
        deadline = time.monotonic() + BODY_TIMEOUT_S + 5
        answers = [_read_response(sock, deadline) for sock in sockets]
    finally:
        stop.set()
        for sock in sockets:
            sock.close()
    for raw in answers:
        status, error = _status_and_error(raw)
        assert status == 408
        assert error["code"] == "request_timeout" and error["type"] == "invalid_request_error"
        assert f"within {BODY_TIMEOUT_S:g} s" in error["message"]


def test_short_content_length_lie_gets_408_not_a_hang(server: str) -> None:
    started = time.monotonic()
    with socket.create_connection(_address(server), timeout=10) as sock:
        sock.sendall(_upload_head(server, 1000) + b"--zz\r\n")  # 6 of the 1000 bytes promised, then silence
        raw = _read_response(sock, started + BODY_TIMEOUT_S + 5)
    elapsed = time.monotonic() - started
    status, error = _status_and_error(raw)
    assert status == 408 and error["code"] == "request_timeout"
    assert b"connection: close" in raw.lower()
    assert BODY_TIMEOUT_S * 0.9 <= elapsed < BODY_TIMEOUT_S + 5  # closed by the server, not by our deadline


def test_slow_upload_does_not_hold_the_in_flight_slot(reference: Engine) -> None:
    """In-process, deterministic: with ``max_in_flight=1`` an upload that stalls mid-body holds no slot, so a
    complete request is transcribed meanwhile; the stalled one then gets 408."""
    app = create_app(reference, ServerOptions(max_in_flight=1, body_timeout_s=BODY_TIMEOUT_S))
    expected = reference.transcribe(sample_audio_path()).text
    sent: list[dict[str, Any]] = []
    partial_read = asyncio.Event()

    async def scenario() -> httpx.Response:
        async def receive() -> dict[str, Any]:
            if not partial_read.is_set():
                partial_read.set()
                return {"type": "http.request", "body": b"--zz\r\n", "more_body": True}
            await asyncio.Event().wait()  # the rest never comes
            raise AssertionError("unreachable")

        async def send(message: Any) -> None:
            sent.append(dict(message))

        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/audio/transcriptions", "raw_path": b"/v1/audio/transcriptions",
                 "query_string": b"", "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
                 "headers": [(b"content-type", b"multipart/form-data; boundary=zz"),
                             (b"content-length", b"100000")]}
        stalled = asyncio.ensure_future(app(scope, receive, send))
        await asyncio.wait_for(partial_read.wait(), timeout=10)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            good = await client.post("/v1/audio/transcriptions", data={"model": "p"},
                                     files={"file": ("a.wav", sample_audio_path().read_bytes())})
        assert not stalled.done()  # the good request was served while the upload was still stalled
        await asyncio.wait_for(stalled, timeout=BODY_TIMEOUT_S + 10)
        return good

    good = asyncio.run(scenario())
    assert good.status_code == 200 and good.json()["text"] == expected
    assert sent[0]["status"] == 408
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_timeout"


# --- idle and surplus connections -----------------------------------------------------------------------------


@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n",
    b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n",
    b"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n",  # a TLS hello
])
def test_malformed_http_gets_a_json_400(server: str, request_bytes: bytes) -> None:
    """Requests h11 cannot parse (garbage, a header line without a colon, a transfer coding it does not know, TLS bytes)
    get a 400 with a body in OpenAI's error shape (uvicorn's own is plain text), and the connection is closed."""
    host, port = _address(server)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request_bytes)
        raw = _read_response(sock, time.monotonic() + 10)
    status, error = _status_and_error(raw)
    assert status == 400 and b"connection: close" in raw.lower(), raw[:300]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_http_request"
    assert error["message"].startswith("malformed HTTP request")


def test_idle_keep_alive_connection_is_closed(server: str) -> None:
    host, port = _address(server)
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
        sent = time.monotonic()
        raw = _read_response(sock, sent + KEEP_ALIVE_S + 5)
        idle = time.monotonic() - sent
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200") and json.loads(body)["status"] == "ok"  # one response, nothing more
    assert KEEP_ALIVE_S * 0.8 <= idle < KEEP_ALIVE_S + 4  # then closed by the server, not by our deadline


def test_connection_limit_gets_503_then_recovers(server: str) -> None:
    sockets = [socket.create_connection(_address(server), timeout=10) for _ in range(MAX_CONNECTIONS)]
    try:
        time.sleep(0.2)  # let the server register them
        refused = httpx.get(f"{server}/health", timeout=10)
    finally:
        for sock in sockets:
            sock.close()
    assert refused.status_code == 503
    assert refused.headers["content-type"] == "application/json" and refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["code"] == "overloaded"  # OpenAI's error shape (uvicorn's own 503 is plain text)
    assert refused.headers["connection"] == "close"
    deadline = time.monotonic() + 10
    while (status := httpx.get(f"{server}/health", timeout=10).status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert status == 200


# --- shutdown -------------------------------------------------------------------------------------------------


class _ThreadedServer:
    """uvicorn in a thread of this process (so ``Engine.transcribe_async`` can be stubbed), as ``serve`` runs it."""

    def __init__(self, app: Any, options: ServerOptions) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="info",
                                **uvicorn_settings(options))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> _ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            assert self.thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        assert not self.thread.is_alive(), "uvicorn did not stop"


def _transcribe_during_shutdown(running: _ThreadedServer,
                                entered: threading.Event) -> tuple[list[httpx.Response], float]:
    """Post the sample clip and, once its handler has ``entered`` the engine, stop the server as SIGTERM does; the
    responses once the client is done, and when (monotonic) the stop began."""
    responses: list[httpx.Response] = []
    client = threading.Thread(target=lambda: responses.append(httpx.post(
        f"{running.url}/v1/audio/transcriptions", files={"file": ("a.wav", sample_audio_path().read_bytes())},
        data={"model": "p"}, timeout=30)))
    client.start()
    assert entered.wait(30)
    started = time.monotonic()
    running.server.should_exit = True  # what SIGTERM does
    client.join(timeout=30)
    return responses, started


def test_work_outliving_the_shutdown_grace_gets_503_not_500(reference: Engine, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    entered = threading.Event()
    cancelled = threading.Event()

    async def endless(_self: Engine, _audio: object, **_: object) -> object:
        entered.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    monkeypatch.setattr(Engine, "transcribe_async", endless)
    options = ServerOptions(shutdown_grace_s=1)
    with _ThreadedServer(create_app(reference, options), options) as running:
        responses, started = _transcribe_during_shutdown(running, entered)
        elapsed = time.monotonic() - started
    assert responses, "no response"
    response = responses[0]
    assert response.status_code == 503, response.text
    assert response.json()["error"] == {"message": "the server is shutting down; retry on another instance",
                                        "type": "server_error", "param": None, "code": "shutting_down"}
    assert options.shutdown_grace_s * 0.9 <= elapsed < options.shutdown_grace_s + 10
    assert cancelled.is_set()  # the transcription was cancelled with its request
    assert "Exception in ASGI application" not in caplog.text


def test_shutdown_does_not_wait_for_the_batch_of_requests_already_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the grace period every request is answered 503, but closing the engine then waited (drain, up to 30 s)
    for the batch it was running: the process outlived ``--shutdown-grace-s`` by up to 30 s."""
    from parakeet_runtime.engine.model.onnx_model import OnnxTdtModel

    engine = Engine.load()
    encode = OnnxTdtModel.encode
    entered = threading.Event()

    def slow(self: OnnxTdtModel, features: Any, lengths: Any) -> Any:
        entered.set()
        time.sleep(8)
        return encode(self, features, lengths)

    monkeypatch.setattr(OnnxTdtModel, "encode", slow)
    options = ServerOptions(shutdown_grace_s=1, close_engine_on_shutdown=True)
    with _ThreadedServer(create_app(engine, options), options) as running:
        responses, started = _transcribe_during_shutdown(running, entered)
    stopped = time.monotonic() - started
    assert responses and responses[0].status_code == 503
    assert stopped < options.shutdown_grace_s + 4, stopped  # not the 8 s batch
    with pytest.raises(EngineClosedError):
        engine.transcribe(sample_audio_path())


def test_work_finishing_within_the_grace_is_served(reference: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    real = Engine.transcribe_async
    entered = threading.Event()
    release = threading.Event()

    async def gated(self: Engine, audio: Any, **kwargs: Any) -> Any:
        entered.set()
        await asyncio.to_thread(release.wait, 30)
        return await real(self, audio, **kwargs)

    monkeypatch.setattr(Engine, "transcribe_async", gated)
    options = ServerOptions(shutdown_grace_s=20)
    responses: list[httpx.Response] = []
    with _ThreadedServer(create_app(reference, options), options) as running:
        client = threading.Thread(target=lambda: responses.append(httpx.post(
            f"{running.url}/v1/audio/transcriptions", files={"file": ("a.wav", sample_audio_path().read_bytes())},
            data={"model": "p"}, timeout=30)))
        client.start()
        assert entered.wait(30)
        running.server.should_exit = True
        time.sleep(0.3)  # shutdown has begun: the server no longer accepts connections
        release.set()
        client.join(timeout=30)
    assert responses and responses[0].status_code == 200
    assert responses[0].json()["text"] == reference.transcribe(sample_audio_path()).text


# --- API key, CORS, disconnects -------------------------------------------------------------------------------


@pytest.fixture()
def keyed_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv(API_KEY_ENV, "s3cret-key")  # the variable, not the flag: the key stays out of `ps`
    process, url = _serve()
    try:
        yield url
    finally:
        process.stop()


def test_api_key(keyed_server: str, reference: Engine) -> None:
    openai = pytest.importorskip("openai")
    expected = reference.transcribe(sample_audio_path()).text
    client = openai.OpenAI(base_url=f"{keyed_server}/v1", api_key="s3cret-key", max_retries=0)
    with sample_audio_path().open("rb") as handle:
        assert client.audio.transcriptions.create(model="parakeet", file=handle).text == expected
    assert len(client.models.list().data) == 1
    wrong = openai.OpenAI(base_url=f"{keyed_server}/v1", api_key="s3cret-kez", max_retries=0)
    with sample_audio_path().open("rb") as handle, pytest.raises(openai.AuthenticationError) as info:
        wrong.audio.transcriptions.create(model="parakeet", file=handle)
    assert info.value.status_code == 401 and info.value.code == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()
    for headers in ({}, {"Authorization": "s3cret-key"}, {"Authorization": "Basic s3cret-key"}):
        response = httpx.get(f"{keyed_server}/v1/models", headers=headers, timeout=10)
        assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert httpx.get(f"{keyed_server}/health", timeout=10).status_code == 200  # probes need no key


def test_api_key_flag_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(API_KEY_ENV, raising=False)
    assert parse_args(["serve"]).api_key is None
    assert parse_args(["serve", "--api-key", "k1"]).api_key == "k1"
    monkeypatch.setenv(API_KEY_ENV, "k2")
    assert parse_args(["serve"]).api_key == "k2"
    assert parse_args(["serve", "--api-key", "k1"]).api_key == "k1"  # the flag wins
    monkeypatch.setenv(API_KEY_ENV, "")
    assert parse_args(["serve"]).api_key is None


@pytest.mark.parametrize("argv", [["--body-timeout-s", "0"], ["--body-timeout-s", "nan"], ["--keep-alive-s", "0"],
                                  ["--header-timeout-s", "0"], ["--header-timeout-s", "inf"],
                                  ["--max-connections", "0"], ["--shutdown-grace-s", "0"], ["--api-key", " "],
                                  ["--warm-up-seconds", "0"], ["--warm-up-seconds", "nan"],
                                  ["--warm-up-seconds", "70", "--max-audio-s", "60"], ["--warm-up-batch", "0"]])
def test_serve_flags_are_validated(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        parse_args(["serve", *argv])
    assert info.value.code == 2 and f"{argv[0]} must be" in capsys.readouterr().err


def test_a_flag_is_checked_by_its_option_and_named_in_the_error(capsys: pytest.CaptureFixture[str]) -> None:
    """The flags are checked by the options they make (one set of rules), and the usage error names the flag, the
    rule and the value; a rule against another field names that field's flag."""
    with pytest.raises(OptionsError) as error:
        ServerOptions(warm_up_seconds=70.0, max_audio_s=60.0)
    assert (error.value.field, error.value.value) == ("warm_up_seconds", 70.0)
    assert str(error.value) == ("ServerOptions.warm_up_seconds must be a positive number of seconds, at most "
                                "max_audio_s (60), or None, got 70.0")
    with pytest.raises(SystemExit):
        parse_args(["serve", "--warm-up-seconds", "70", "--max-audio-s", "60"])
    assert ("--warm-up-seconds must be a positive number of seconds, at most --max-audio-s (60), got 70.0"
            in capsys.readouterr().err)
    args = parse_args(["serve", "--max-in-flight", "3", "--max-batch-size", "2", "--warm-up-seconds", "5",
                       "--warm-up-batch", "2"])
    assert args.options.server == ServerOptions(max_in_flight=3, warm_up_seconds=5.0, warm_up_batch=2,
                                                close_engine_on_shutdown=True)
    assert args.options.batching.max_queue == 6 and args.options.batching.max_batch_size == 2


@pytest.mark.parametrize("field", [{"body_timeout_s": 0.0}, {"header_timeout_s": 0.0}, {"header_timeout_s": math.nan},
                                   {"keep_alive_s": 0}, {"max_connections": 0},
                                   {"shutdown_grace_s": -1}, {"api_key": ""}, {"max_in_flight": 0},
                                   {"warm_up_seconds": 0.0}, {"warm_up_seconds": math.inf}, {"warm_up_seconds": True},
                                   {"warm_up_seconds": 3601.0}])
def test_server_options_are_validated(field: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(field))):
        ServerOptions(**field)


def test_cors_origins(reference: Engine) -> None:
    preflight = {"Origin": "https://app.example", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "authorization"}

    async def go(options: ServerOptions, origin: str) -> tuple[httpx.Response, httpx.Response]:
        app = create_app(reference, options)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            options_response = await client.options("/v1/audio/transcriptions", headers={**preflight,
                                                                                         "Origin": origin})
            get = await client.get("/v1/models", headers={"Origin": origin, "Authorization": "Bearer k"})
        return options_response, get

    allowed = ServerOptions(cors_origins=("https://app.example",), api_key="k")
    ok_preflight, ok_get = asyncio.run(go(allowed, "https://app.example"))
    assert ok_preflight.status_code == 200  # a preflight carries no key and needs none
    assert ok_preflight.headers["access-control-allow-origin"] == "https://app.example"
    assert ok_get.status_code == 200 and ok_get.headers["access-control-allow-origin"] == "https://app.example"
    other_preflight, other_get = asyncio.run(go(allowed, "https://evil.example"))
    assert other_preflight.status_code == 400  # in OpenAI's error shape, like every other error (was plain text)
    assert other_preflight.json()["error"] == {
        "message": "CORS preflight refused: this server does not allow the request's origin",
        "type": "invalid_request_error", "param": None, "code": "cors_refused"}
    assert "access-control-allow-origin" not in other_preflight.headers
    assert "access-control-allow-origin" not in other_get.headers
    _, default_get = asyncio.run(go(ServerOptions(api_key="k"), "https://app.example"))
    assert default_get.status_code == 200 and "access-control-allow-origin" not in default_get.headers


@pytest.mark.parametrize("path", ["/v1/realtime", "/v1/audio/transcriptions"])
def test_websocket_handshake_gets_an_api_error(path: str, reference: Engine) -> None:
    """A WebSocket client (OpenAI's realtime API is one) got uvicorn's bodyless 403: now a 404 in OpenAI's error
    shape, whichever WebSocket library uvicorn has (none: the handshake is a GET with no such route)."""
    options = ServerOptions()
    handshake = {"Connection": "Upgrade", "Upgrade": "websocket", "Sec-WebSocket-Version": "13",
                 "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}
    with _ThreadedServer(create_app(reference, options), options) as running:
        response = httpx.get(f"{running.url}{path}", headers=handshake, timeout=30)
        after = httpx.get(f"{running.url}/health", timeout=30)
    assert response.status_code in (404, 405), response.text
    error = response.json()["error"]
    assert error["code"] in ("not_found", "method_not_allowed") and error["type"] == "invalid_request_error"
    assert after.status_code == 200


class _Seen(logging.Handler):
    def __init__(self, needle: str) -> None:
        super().__init__(logging.DEBUG)
        self.needle = needle
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.needle in record.getMessage():
            self.event.set()


def test_client_hanging_up_mid_upload_logs_no_error(reference: Engine, caplog: pytest.LogCaptureFixture) -> None:
    server_logger = logging.getLogger("parakeet_runtime.engine.serving.server")
    seen = _Seen("client disconnected during the upload")
    server_logger.addHandler(seen)
    options = ServerOptions()
    try:
        with caplog.at_level(logging.DEBUG, logger="parakeet_runtime.engine.serving.server"), \
                _ThreadedServer(create_app(reference, options), options) as running:
            with socket.create_connection(("127.0.0.1", running.port), timeout=10) as sock:
                sock.sendall(_upload_head(running.url, 100_000) + b"--zz\r\n")
                time.sleep(0.3)  # the app is reading the body
            assert seen.event.wait(10), "the server did not notice the disconnect"
            assert httpx.get(f"{running.url}/health", timeout=10).status_code == 200
    finally:
        server_logger.removeHandler(seen)
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]
    assert "Traceback" not in caplog.text


def test_header_timeout_flag() -> None:
    assert parse_args(["serve"]).header_timeout_s == ServerOptions().header_timeout_s == 10.0
    assert parse_args(["serve", "--header-timeout-s", "2.5"]).header_timeout_s == 2.5
    settings = uvicorn_settings(ServerOptions(header_timeout_s=2.5))
    assert settings["http"].header_timeout_s == 2.5


def test_unknown_routes_and_methods_answer_openai_style_json() -> None:
    engine = Engine.load(batching=BatchingOptions(enabled=False))
    app = create_app(engine, ServerOptions())

    async def go() -> list[httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return [await client.get("/nope"), await client.get("/v1/audio/transcriptions"),
                    await client.delete("/health")]

    try:
        missing, wrong_method, wrong_method_2 = asyncio.run(go())
    finally:
        engine.close()
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert wrong_method.headers["allow"] == "POST"
    assert wrong_method_2.status_code == 405 and "GET" in wrong_method_2.headers["allow"]


def test_a_flac_of_unknown_length_is_transcribed() -> None:
    """A FLAC written to a pipe declares no length (libsndfile reports 2^63 - 1 frames): the server's header
    check leaves it to the engine instead of refusing it as too long."""
    import io

    import soundfile

    from tests.test_hostile_inputs import _flac_declaring

    honest, unknown = _flac_declaring(0)
    assert soundfile.info(io.BytesIO(unknown)).frames > 2**62
    engine = Engine.load(batching=BatchingOptions(enabled=False))
    app = create_app(engine, ServerOptions())

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/audio/transcriptions", files={"file": ("a.flac", unknown)})

    try:
        response = asyncio.run(go())
        expected = engine.transcribe(honest).text
    finally:
        engine.close()
    assert response.status_code == 200, response.text
    assert response.json()["text"] == expected and expected.strip()


def test_two_file_parts_are_refused_for_what_they_are() -> None:
    engine = Engine.load(batching=BatchingOptions(enabled=False))
    app = create_app(engine, ServerOptions())
    clip = sample_audio_path().read_bytes()

    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/audio/transcriptions",
                                     files=[("file", ("a.wav", clip)), ("file", ("b.wav", clip))])

    try:
        response = asyncio.run(go())
    finally:
        engine.close()
    assert response.status_code == 400
    assert "more than one file part" in response.json()["error"]["message"]


@pytest.mark.parametrize(("connections", "tasks", "refused"),
                         [(1, 1, False), (1, 2, False), (2, 1, True), (1, 3, True)])
def test_connection_limit_counts_connections_and_running_requests(connections: int, tasks: int, refused: bool) -> None:
    """uvicorn's ``limit_concurrency`` test as the protocol's app wrapper applies it (limit 2): the open
    connections (this one included), or the running requests (this one's task included, so one more than
    uvicorn's count before it adds the task)."""
    from parakeet_runtime.engine.serving.http11 import _connection_limited

    reached: list[str] = []
    sent: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        reached.append(scope["type"])

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    limited = _connection_limited(app, 2, set(range(connections)), set(range(tasks)), 7)
    asyncio.run(limited({"type": "http"}, receive, send))
    asyncio.run(limited({"type": "lifespan"}, receive, send))  # not an HTTP request: never refused
    if refused:
        assert reached == ["lifespan"] and sent[0]["status"] == 503
        assert (b"retry-after", b"7") in sent[0]["headers"]
        assert json.loads(sent[1]["body"])["error"]["code"] == "overloaded"
    else:
        assert reached == ["http", "lifespan"] and not sent


@pytest.mark.parametrize("header_bytes", [20_000, 100_000])
def test_oversized_headers_in_one_write_get_431(server: str, header_bytes: int) -> None:
    """A request head over h11's 16 KiB limit sent in one write (h11 checks its limit only across reads) gets 431
    in OpenAI's error shape and the connection is closed; the server keeps serving."""
    host, port = _address(server)
    head = (f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\nX-Filler: {'a' * header_bytes}\r\n\r\n").encode()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(head)
        raw = _read_response(sock, time.monotonic() + 10)
    status, error = _status_and_error(raw)
    assert status == 431 and b"connection: close" in raw.lower(), raw[:300]
    assert error["code"] == "request_headers_too_large"
    assert httpx.get(f"{server}/health", headers={"X-Filler": "a" * 8_000}, timeout=10).status_code == 200


# --- findings of a hostile-traffic probe (2026-12-02) ---------------------------------------------------------


def test_a_trailing_slash_is_an_unknown_path_not_a_redirect(server: str) -> None:
    """Starlette answered /health/ with a bodyless 307 to a URL built from the Host header."""
    for method, path in (("GET", "/health/"), ("POST", "/v1/audio/transcriptions/"), ("GET", "/v1/models/")):
        response = httpx.request(method, f"{server}{path}", headers={"Host": "evil.example:666"}, timeout=10)
        assert response.status_code == 404, (path, response.status_code)
        assert "location" not in response.headers and response.json()["error"]["code"] in ("not_found",
                                                                                           "model_not_found")


def test_content_length_with_transfer_encoding_is_refused_and_closed(server: str) -> None:
    """A body framed as chunked whose Content-Length covers a second request: h11 read it as chunked and kept the
    connection, so the rest was answered as another request (a request a proxy framing by Content-Length never
    saw). Now one 400 and the connection is closed."""
    host, port = _address(server)
    smuggled = f"GET /v1/models HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n"
    body = "0\r\n\r\n" + smuggled
    request = (f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Length: {len(body)}\r\n"
               f"Transfer-Encoding: chunked\r\nContent-Type: multipart/form-data; boundary=x\r\n\r\n{body}").encode()
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(request)
        raw = _read_response(sock, time.monotonic() + 10)
    assert raw.count(b"HTTP/1.1 ") == 1, raw[:500]
    status, error = _status_and_error(raw)
    assert status == 400 and error["code"] == "invalid_http_request" and b"connection: close" in raw.lower()
    assert httpx.get(f"{server}/health", timeout=10).status_code == 200


@pytest.mark.parametrize(("data", "param", "shown"), [
    ({"language": "/etc"}, "language", "'/etc'"),
    ({"temperature": "0x1"}, "temperature", "'0x1'"),
    ({"0xdeadbeef": "1"}, "0xdeadbeef", "unrecognized request argument: '0xdeadbeef'"),
    ({"timestamp_granularities": "char"}, "timestamp_granularities", "'char'"),
])
def test_errors_that_echo_the_clients_own_values_keep_their_reason(server: str, data: dict[str, str], param: str,
                                                                   shown: str) -> None:
    """The filter that keeps paths and addresses out of error bodies hid these reasons behind "the request could not
    be processed" (and logged a warning for each), because the client's own value looked like a path or an
    address."""
    response = httpx.post(f"{server}/v1/audio/transcriptions", timeout=30,
                          files={"file": ("a.wav", sample_audio_path().read_bytes())},
                          data={"model": "p", "response_format": "verbose_json", **data})
    error = response.json()["error"]
    assert response.status_code == 400 and error["param"] == param and shown in error["message"], error


@pytest.mark.parametrize(("data", "files", "message"), [
    ({"prompt": "x" * 100_000}, None, "unreadable multipart form: Part exceeded maximum size of 64KB"),
    ({f"f{i}": "1" for i in range(40)}, None, "unreadable multipart form: Too many fields"),
    ({"file": "text"}, [("file", ("a.wav", b"RIFF"))], "one 'file' field per request"),
])
def test_form_errors_say_what_is_wrong(server: str, data: dict[str, str], files: Any, message: str) -> None:
    """A part over the size limit and too many fields were both "expected a multipart form with a 'file' field"; a
    text part named 'file' beside the file part was silently ignored (or, after it, "missing the 'file' field")."""
    files = files or [("file", ("a.wav", sample_audio_path().read_bytes()))]
    response = httpx.post(f"{server}/v1/audio/transcriptions", files=files, data={"model": "p", **data}, timeout=30)
    assert response.status_code == 400 and message in response.json()["error"]["message"], response.text


# --- findings of an OpenAI-client probe (2026-12-03) ---------------------------------------------------------


@pytest.mark.parametrize("filename", [None, ""], ids=["no-filename", "empty-filename"])
@pytest.mark.parametrize("seconds", [None, 1.0], ids=["whole-clip", "one-second"])
def test_a_file_part_without_a_filename_is_the_audio(server: str, reference: Engine, filename: str | None,
                                                    seconds: float | None) -> None:
    """The openai client given ``file=(None, data)`` or ``("", data)`` (and requests' ``files={"file": (None,
    data)}``, and ``curl -F file=<clip.wav``) sends the audio as a part without a filename: Starlette took it for a
    text field, so the clip got "Part exceeded maximum size of 64KB" and a short one "missing the 'file' field"."""
    import io

    import soundfile

    samples, rate = soundfile.read(sample_audio_path(), dtype="float32")
    if seconds is not None:
        samples = samples[: int(seconds * rate)]
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV")
    clip = buffer.getvalue()
    assert (len(clip) > 64 * 1024) == (seconds is None)  # over and under the text fields' limit
    response = httpx.post(f"{server}/v1/audio/transcriptions", files={"file": (filename, clip)},
                          data={"model": "p", "response_format": "verbose_json"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["text"] == reference.transcribe(clip).text


def test_the_head_size_is_never_counted_over_what_was_sent() -> None:
    """A head h11 accepts (its limit counts the bytes sent) must not be refused by the 431 check: the estimate is
    the fewest bytes the request can have had."""
    from parakeet_runtime.engine.serving.http11 import _head_size

    sent = b"GET /v1/models HTTP/1.1\r\nhost:x\r\nx-a:" + b"b" * 100 + b"\r\n\r\n"
    scope = {"method": "GET", "raw_path": b"/api/v1/models", "root_path": "/api", "query_string": b"",
             "headers": [(b"host", b"x"), (b"x-a", b"b" * 100)]}
    assert _head_size(scope) == len(sent)


def test_uploads_still_parse_when_the_multipart_extension_cannot_run(reference: Engine,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """The 'file'-without-filename extension reaches into Starlette's parser internals; where a Starlette release
    changes them, every upload must still parse (Starlette's own parsing, with a warning), not fail as an
    unreadable form."""
    from parakeet_runtime.engine.serving import server as server_module

    def changed(self: Any) -> None:
        raise AttributeError("'_FileFieldParser' object has no attribute '_current_part'")

    monkeypatch.setattr(server_module._FileFieldParser, "on_headers_finished", changed)
    options = ServerOptions()
    clip = sample_audio_path().read_bytes()
    with _ThreadedServer(create_app(reference, options), options) as running:
        response = httpx.post(f"{running.url}/v1/audio/transcriptions", files={"file": ("clip.wav", clip)},
                              data={"model": "p"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["text"] == reference.transcribe(clip).text
