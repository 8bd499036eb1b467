"""The HTTP server: a real ``parakeet-runtime serve`` process on loopback with real HTTP clients, and the ASGI
app in-process where a test must control timing (a stubbed ``transcribe_async`` gated on events, never sleeps).
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import shutil
import socket
import subprocess
import sys
import threading
import zlib
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import (
    AudioDecodeError,
    BatchingOptions,
    Engine,
    EngineOverloadedError,
    ParakeetRuntimeError,
    default_model_dir,
    sample_audio_path,
)
from parakeet_runtime.engine.model.manifest import load_manifest
from parakeet_runtime.engine.results import TimedText, Token, Transcript
from parakeet_runtime.engine.serving.formats import round_time, to_srt, to_vtt
from parakeet_runtime.engine.serving.options import ServerOptions
from parakeet_runtime.engine.serving.server import compression_ratio, create_app

REPO = Path(__file__).resolve().parent.parent
MANIFEST = load_manifest(default_model_dir())
UNSAFE = {
    "address": re.compile(r"0x[0-9a-fA-F]+"),
    "repr": re.compile(r"<[^>]*object at"),
    "path": re.compile(r"(?:^|[\s'\"(=:])(?:~?/|[A-Za-z]:\\)\S"),
    "traceback": re.compile(r"Traceback|File \""),
}


def _assert_safe(text: str) -> None:
    for kind, pattern in UNSAFE.items():
        assert pattern.search(text) is None, f"error body shows a {kind}: {text}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ServerProcess:
    """A uvicorn process whose output a thread drains; ``wait_listening`` blocks until uvicorn says it listens
    (its lifespan, which loads the model, has finished by then) or the process ends: no polling."""

    def __init__(self, command: list[str], *, cwd: Path | None = None) -> None:
        self.proc = subprocess.Popen(command, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self._settled = threading.Event()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)
            if "Uvicorn running on" in line:
                self._settled.set()
        self._settled.set()  # end of output: the process is gone

    def output(self) -> str:
        return "".join(self.lines)[-4000:]

    def wait_listening(self, timeout: float = 120) -> None:
        if not self._settled.wait(timeout):
            raise RuntimeError(f"server not listening after {timeout} s: {self.output()}")
        if not any("Uvicorn running on" in line for line in self.lines):
            raise RuntimeError(f"server exited: {self.output()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise
        finally:
            self._reader.join(timeout=10)


def _serve(*extra: str) -> tuple[_ServerProcess, str]:
    port = _free_port()
    server = _ServerProcess([sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "serve",
                             "--host", "127.0.0.1", "--port", str(port), "--log-level", "info", *extra])
    try:
        server.wait_listening()
    except BaseException:
        server.stop()
        raise
    return server, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    process, url = _serve("--max-upload-mb", "2")
    try:
        yield url
    finally:
        process.stop()


@pytest.fixture(scope="module")
def reference() -> Engine:
    return Engine.load(batching=BatchingOptions(enabled=False))


def _post(url: str, data: bytes, *, name: str = "clip.wav",
          fields: dict[str, str | list[str]] | None = None) -> httpx.Response:
    return httpx.post(f"{url}/v1/audio/transcriptions", files={"file": (name, data, "audio/wav")},
                      data={"model": "parakeet", **(fields or {})}, timeout=60)


def _wav(samples: np.ndarray, subtype: str = "PCM_16") -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, 16000, format="WAV", subtype=subtype)
    return buffer.getvalue()


def test_health_and_models_report_one_slug(server: str) -> None:
    expected_id = MANIFEST.model_name
    assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", expected_id)
    health = httpx.get(f"{server}/health").json()
    assert health == {"status": "ok", "model": expected_id}
    models = httpx.get(f"{server}/v1/models").json()
    assert models["object"] == "list" and len(models["data"]) == 1
    card = models["data"][0]
    assert card["object"] == "model" and card["id"] == expected_id
    assert card["description"] == MANIFEST.description and card["description"]
    assert card["languages"] == list(MANIFEST.languages) and card["languages"]
    assert httpx.get(f"{server}/v1/models/{expected_id}").json() == card
    other = httpx.get(f"{server}/v1/models/whisper-1")
    assert other.status_code == 404 and other.json()["error"]["code"] == "model_not_found"


def test_log_level_reaches_the_library() -> None:
    """``serve --log-level`` sets the library's log level too: ``debug`` shows the model's loading and a line per
    request (before, the library stayed at WARNING whatever the flag said)."""
    process, url = _serve("--log-level", "debug")
    try:
        assert _post(url, sample_audio_path().read_bytes()).status_code == 200
    finally:
        process.stop()
    output = "".join(process.lines)
    assert "model loaded from" in output and "transcribed" in output


def test_openai_client_lists_and_retrieves_the_model(server: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in client.models.list()] == [MANIFEST.model_name]
    assert client.models.retrieve(MANIFEST.model_name).id == MANIFEST.model_name


def test_model_id_option_and_directory_fallback(reference: Engine, tmp_path: Path) -> None:
    """``ServerOptions.model_name`` wins; a manifest without a usable name falls back to the directory name."""
    assert _in_process_get(create_app(reference, ServerOptions(model_name="my-asr")), "/health")["model"] == "my-asr"
    copy = tmp_path / "my-model-v1"
    shutil.copytree(default_model_dir(), copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["model_name"] = ""
    (copy / "manifest.json").write_text(json.dumps(raw))
    with Engine.load(copy, batching=BatchingOptions(enabled=False)) as engine:
        body = _in_process_get(create_app(engine), "/v1/models")
    assert body["data"][0]["id"] == "my-model-v1"


def _in_process_get(app: Any, path: str) -> Any:
    async def go() -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.get(path)
            assert response.status_code == 200, response.text
            return response.json()

    return asyncio.run(go())


def test_warm_up_runs_in_the_startup_before_requests(reference: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """``ServerOptions(warm_up_seconds=S)``: the app's startup (ASGI lifespan) loads the engine, then runs
    ``Engine.warm_up(S)`` on it, and reports the startup complete only after that; without it, nothing warms up."""
    calls: list[float] = []
    original = Engine.warm_up

    def recording(self: Engine, seconds: float = 60.0, *, batch: int = 1) -> float:
        calls.append(seconds)
        return original(self, seconds, batch=batch)

    monkeypatch.setattr(Engine, "warm_up", recording)

    async def startup(app: Any) -> list[str]:
        messages = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        sent: list[str] = []

        async def receive() -> dict[str, str]:
            return messages.pop(0)

        async def send(message: dict[str, str]) -> None:
            sent.append(f"{message['type']}:{len(calls)}")

        await app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, receive, send)
        return sent

    sent = asyncio.run(startup(create_app(lambda: reference, ServerOptions(warm_up_seconds=1.5))))
    assert calls == [1.5] and sent == ["lifespan.startup.complete:1", "lifespan.shutdown.complete:1"]
    calls.clear()
    assert asyncio.run(startup(create_app(reference))) == ["lifespan.startup.complete:0",
                                                           "lifespan.shutdown.complete:0"]


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
        assert body["duration"] == round_time(expected.duration)
        declared = reference.manifest.languages  # OpenAI's verbose_json has the language: the model's only one
        assert declared == ("en",)
        assert body["task"] == "transcribe" and body["language"] == "english"  # named as OpenAI names it
        assert [(w["word"], w["start"], w["end"]) for w in body["words"]] == [
            (w.text, round_time(w.start), round_time(w.end)) for w in expected.words
        ]
        assert [(s["text"], s["start"], s["end"]) for s in body["segments"]] == [
            (s.text, round_time(s.start), round_time(s.end)) for s in expected.segments
        ]


def test_verbose_json_times_are_milliseconds(server: str, reference: Engine) -> None:
    """The exact times have float noise (``3.7600000000000002``); the response writes at most 3 decimals."""
    exact = reference.transcribe(sample_audio_path())
    times = [exact.duration] + [t for s in exact.segments for t in (s.start, s.end)]
    times += [t for w in exact.words for t in (w.start, w.end)]
    assert any(len(repr(t).split(".")[1]) > 3 for t in times), "the sample no longer exercises rounding"
    response = _post(server, sample_audio_path().read_bytes(),
                     fields={"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]})
    assert response.status_code == 200
    # every time as written (the segments' scores, avg_logprob and compression_ratio, are not times)
    numbers = re.findall(r'"(?:duration|start|end)":\s*(-?\d+\.\d+)', response.text.replace(exact.text, ""))
    assert numbers and all(len(n.split(".")[1]) <= 3 for n in numbers), numbers


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


def test_verbose_json_segments_have_every_field_of_openais(server: str, reference: Engine) -> None:
    """OpenAI's SDK requires ``tokens``, ``temperature``, ``avg_logprob``, ``compression_ratio`` and
    ``no_speech_prob`` on a segment: without them its client sets them to None and ``seg.avg_logprob < -1``
    raises. An engine without confidence has no log-probabilities: ``avg_logprob`` is 0 and the segment carries no
    ``confidence`` key, which is how a client tells."""
    expected = reference.transcribe(sample_audio_path())
    response = _post(server, sample_audio_path().read_bytes(),
                     fields={"response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]})
    assert response.status_code == 200, response.text
    segments = response.json()["segments"]
    assert len(segments) == len(expected.segments) > 0
    assert [i for s in segments for i in s["tokens"]] == [t.id for t in expected.tokens]  # all, in order, once
    for sent in segments:
        assert list(sent) == ["id", "seek", "start", "end", "text", "tokens", "temperature", "avg_logprob",
                              "compression_ratio", "no_speech_prob"]  # OpenAI's order; no confidence key
        assert sent["temperature"] == 0.0 and sent["no_speech_prob"] == 0.0 and sent["avg_logprob"] == 0.0
        text = sent["text"].encode()
        assert sent["compression_ratio"] == len(text) / len(zlib.compress(text))
    openai_types = pytest.importorskip("openai.types.audio")
    parsed = openai_types.TranscriptionVerbose.model_validate(response.json())  # the SDK's required fields, typed
    assert parsed.segments is not None and all(isinstance(s.avg_logprob, float) for s in parsed.segments)


def test_verbose_json_segment_fields_of_several_segments(reference: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each segment lists its own tokens and averages their log-probabilities; a segment whose tokens were not all
    scored gets the unmeasured 0, never a mean over some of them."""
    tokens = tuple(Token(i + 10, "w", "▁w", i, 1, i, i + 1, i * 0.08, (i + 1) * 0.08, log_prob=lp)
                   for i, lp in enumerate([-0.5, -1.5, -0.25, None, -2.0]))
    segments = (
        TimedText("one two.", 0, 2, 0.0, 0.16, confidence=0.5, first_token=0, end_token=2),
        TimedText("three four five", 2, 5, 0.16, 0.4, first_token=2, end_token=5),
        TimedText("", 5, 5, 0.4, 0.4),  # built by hand: no token indices
    )
    transcript = Transcript(text="one two. three four five", duration=1.0, tokens=tokens, segments=segments)

    async def fake(_self: Engine, _audio: object, **_: object) -> Transcript:
        return transcript

    monkeypatch.setattr(Engine, "transcribe_async", fake)
    response = _in_process_post(create_app(reference), {"response_format": "verbose_json"})
    assert response.status_code == 200, response.text
    first, second, unknown = response.json()["segments"]
    assert (first["tokens"], first["avg_logprob"], first["confidence"]) == ([10, 11], -1.0, 0.5)
    assert (second["tokens"], second["avg_logprob"]) == ([12, 13, 14], 0.0) and "confidence" not in second
    assert (unknown["tokens"], unknown["avg_logprob"], unknown["compression_ratio"]) == ([], 0.0, 0.0)


def test_verbose_json_leaves_out_words_without_text(reference: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """The engine's word list (NeMo's grouping) can hold a word of no text (a word-boundary piece alone); OpenAI's
    words always have text: it was passed through as ``"word": ""``."""
    words = (TimedText("one", 0, 1, 0.0, 0.08), TimedText("", 1, 2, 0.08, 0.16), TimedText("two", 2, 3, 0.16, 0.24))
    transcript = Transcript(text="one two", duration=1.0, words=words)

    async def fake(_self: Engine, _audio: object, **_: object) -> Transcript:
        return transcript

    monkeypatch.setattr(Engine, "transcribe_async", fake)
    response = _in_process_post(create_app(reference), {"response_format": "verbose_json",
                                                        "timestamp_granularities[]": "word"})
    assert response.status_code == 200, response.text
    assert [(w["word"], w["start"]) for w in response.json()["words"]] == [("one", 0.0), ("two", 0.16)]


def test_compression_ratio_is_whispers() -> None:
    assert compression_ratio("") == 0.0  # zlib's empty stream is 8 bytes: 0 / 8, as Whisper's function gives
    assert compression_ratio("the captain walked") < 2.4 < compression_ratio("the the the " * 40)  # a loop stands out
    text = "é" * 30  # UTF-8 bytes, not characters
    assert compression_ratio(text) == len(text.encode()) / len(zlib.compress(text.encode()))


# --- OpenAI options: honoured or refused, never ignored ------------------------------------------------------


def test_openai_client_language_and_temperature_that_hold(server: str, reference: Engine) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    expected = reference.transcribe(sample_audio_path()).text
    for language in MANIFEST.languages:
        with sample_audio_path().open("rb") as handle:
            assert client.audio.transcriptions.create(model="parakeet", file=handle, language=language).text == expected
    with sample_audio_path().open("rb") as handle:
        assert client.audio.transcriptions.create(model="parakeet", file=handle, temperature=0).text == expected


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [({"language": "fr"}, "language"), ({"language": "english"}, "language"), ({"temperature": 0.4}, "temperature"),
     ({"prompt": "the captain"}, "prompt")],
    ids=["fr", "english", "temperature", "prompt"],
)
def test_openai_client_gets_a_400_for_what_cannot_be_honoured(server: str, kwargs: dict[str, Any],
                                                              param: str) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0)
    with sample_audio_path().open("rb") as handle, pytest.raises(openai.BadRequestError) as info:
        client.audio.transcriptions.create(model="parakeet", file=handle, **kwargs)
    assert info.value.status_code == 400
    assert info.value.param == param
    message = info.value.message
    if param == "language" and kwargs["language"] == "fr":
        assert f"it transcribes: {', '.join(MANIFEST.languages)}" in message and "not supported" in message
    if param == "language" and kwargs["language"] == "english":
        assert "not an ISO 639-1 code" in message
    if param == "temperature":
        assert "greedy decoding only" in message


def test_language_is_case_insensitive_over_plain_http(server: str, reference: Engine) -> None:
    for language in MANIFEST.languages:
        response = _post(server, sample_audio_path().read_bytes(), fields={"language": language.upper()})
        assert response.status_code == 200, response.text
        assert response.json()["text"] == reference.transcribe(sample_audio_path()).text


@pytest.mark.parametrize(
    ("fields", "param", "says"),
    [
        ({"language": "de"}, "language", "it transcribes: "),
        ({"temperature": "0.7"}, "temperature", "greedy decoding only"),
        ({"temperature": "warm"}, "temperature", "greedy decoding only"),
        ({"prompt": "harbour"}, "prompt", "does not take a text prompt"),
        ({"stream": "true"}, "stream", "not supported"),
        ({"include[]": "logprobs"}, "include[]", "not supported"),
        ({"chunking_strategy": "auto"}, "chunking_strategy", "not supported"),
        ({"beam_size": "4"}, "beam_size", "unrecognized request argument"),
        ({"timestamp_granularities[]": "word"}, "timestamp_granularities[]", "verbose_json"),
    ],
    ids=["language", "temperature", "temperature-text", "prompt", "stream", "include", "chunking", "unknown",
         "granularities-without-verbose"],
)
def test_unsupported_fields_are_refused_over_plain_http(server: str, fields: dict[str, str], param: str,
                                                         says: str) -> None:
    response = _post(server, sample_audio_path().read_bytes(), fields=dict(fields))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param
    assert says in error["message"]


@pytest.mark.parametrize("fields", [
    {"prompt": ["hello", ""]}, {"stream": ["true", "false"]}, {"response_format": ["xyz", "text"]},
    {"language": ["xx", ""]}, {"temperature": ["1", "0"]}, {"model": ["a", "b"]},
], ids=["prompt", "stream", "response_format", "language", "temperature", "model"])
def test_a_field_given_twice_is_refused(server: str, fields: dict[str, str | list[str]]) -> None:
    """Found by fuzzing the server: only a repeated field's last value was read, so ``prompt=hello`` then
    ``prompt=`` passed (the first value checked by nothing, silently ignored)."""
    response = _post(server, sample_audio_path().read_bytes(), fields=fields)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    (key,) = fields
    assert error["param"] == key and "more than once" in error["message"]


def test_timestamp_granularities_may_be_repeated(server: str) -> None:
    response = _post(server, sample_audio_path().read_bytes(), fields={
        "response_format": "verbose_json", "timestamp_granularities[]": ["word", "segment"]})
    assert response.status_code == 200, response.text
    assert response.json()["words"] and response.json()["segments"]


def test_neutral_values_are_accepted(server: str, reference: Engine) -> None:
    """Values that ask for nothing this server does not do: temperature 0, stream false, empty prompt."""
    response = _post(server, sample_audio_path().read_bytes(),
                     fields={"temperature": "0.0", "stream": "false", "prompt": "", "language": ""})
    assert response.status_code == 200, response.text
    assert response.json()["text"] == reference.transcribe(sample_audio_path()).text


def test_language_without_declared_languages_is_taken_with_a_warning(tmp_path: Path) -> None:
    """A model that declares no languages (an onnx-asr or sherpa-onnx directory) takes any ISO 639-1 code, so that
    clients that always send one keep working, and says in the body's warnings that it was not checked; a value
    that is no such code is still a 400; without ``language`` the body keeps OpenAI's shape."""
    copy = tmp_path / "undeclared"
    shutil.copytree(default_model_dir(), copy)
    raw = json.loads((copy / "manifest.json").read_text())
    raw["languages"] = []
    (copy / "manifest.json").write_text(json.dumps(raw))
    with Engine.load(copy, batching=BatchingOptions(enabled=False)) as engine:
        assert engine.manifest.languages == ()
        app = create_app(engine)
        taken = _in_process_post(app, {"language": "en"})
        verbose = _in_process_post(app, {"language": "de", "response_format": "verbose_json"})
        refused = _in_process_post(app, {"language": "english"})
        plain = _in_process_post(app, {})
    assert taken.status_code == 200 and taken.json()["text"] == plain.json()["text"]
    (warning,) = taken.json()["warnings"]
    assert "'en' was not checked" in warning and "does not declare" in warning
    assert verbose.status_code == 200 and verbose.json()["language"] == "german"
    assert "'de' was not checked" in verbose.json()["warnings"][0]
    assert refused.status_code == 400
    error = refused.json()["error"]
    assert error["param"] == "language" and "not an ISO 639-1 code" in error["message"]
    assert plain.status_code == 200 and "warnings" not in plain.json()


def _in_process_post(app: Any, fields: dict[str, str], data: bytes | None = None) -> httpx.Response:
    async def go() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/audio/transcriptions",
                                     files={"file": ("a.wav", data or sample_audio_path().read_bytes())},
                                     data={"model": "p", **fields}, timeout=60)

    return asyncio.run(go())


# --- errors: typed, OpenAI-shaped, and never showing reprs, paths or tracebacks ------------------------------


def _bad_uploads() -> dict[str, bytes]:
    wav = _wav(np.zeros(16000, dtype=np.float32))
    nan = np.zeros(1600, dtype=np.float32)
    nan[10] = np.nan
    return {
        "garbage": bytes(range(256)) * 8,
        "truncated-wav": wav[:30],
        "malformed-fmt-chunk": wav[:20],
        "empty": b"",
        "text": b"this is a text file, not audio\n" * 40,
        "flac-magic": b"fLaC" + bytes(60),
        "nan-samples": _wav(nan, subtype="FLOAT"),
    }


@pytest.mark.parametrize("kind", list(_bad_uploads()))
def test_bad_uploads_are_400_without_reprs_or_paths(server: str, kind: str) -> None:
    response = _post(server, _bad_uploads()[kind], name=f"{kind}.wav")
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "file"
    assert error["code"] == "invalid_audio" and error["message"].startswith("could not decode the audio file")
    _assert_safe(response.text)
    assert "bytes of encoded audio" in error["message"]  # what was sent, not how it was held


def test_an_empty_upload_says_it_is_empty(server: str) -> None:
    """A zero-byte file (the openai client given ``b""``, a failed upload) got libsndfile's "Format not
    recognised", which sends users looking for a codec problem."""
    response = _post(server, b"")
    error = response.json()["error"]
    assert response.status_code == 400 and error["code"] == "invalid_audio" and error["param"] == "file"
    assert error["message"] == "could not decode the audio file: cannot decode audio from 0 bytes of encoded audio: " \
        "the file is empty"


def test_oversize_missing_and_malformed_requests(server: str, reference: Engine) -> None:
    big = _post(server, b"\x00" * (3 * 1024 * 1024))
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "payload_too_large"
    missing = httpx.post(f"{server}/v1/audio/transcriptions", data={"model": "x"}, timeout=30)
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "file"
    not_a_form = httpx.post(f"{server}/v1/audio/transcriptions", content=b"\x00garbage",
                            headers={"content-type": "multipart/form-data; boundary=zz"}, timeout=30)
    assert not_a_form.status_code == 400 and not_a_form.json()["error"]["param"] == "file"
    bad_format = _post(server, sample_audio_path().read_bytes(), fields={"response_format": "xml"})
    assert bad_format.status_code == 400 and bad_format.json()["error"]["param"] == "response_format"
    for response in (big, missing, not_a_form, bad_format):
        _assert_safe(response.text)
    # ... and the server keeps serving.
    assert _post(server, sample_audio_path().read_bytes()).json()["text"] == reference.transcribe(
        sample_audio_path()
    ).text


Failing = Callable[[Engine, object], Awaitable[object]]


def _raising(exc: BaseException) -> Failing:
    async def fail(_self: Engine, _audio: object, **_: object) -> object:
        raise exc

    return fail


@pytest.mark.parametrize(
    ("exc", "status", "code"),
    [
        (RuntimeError("onnxruntime failed in /opt/models/encoder.onnx at <Session object at 0xdeadbeef>"), 500,
         "internal_error"),
        (ParakeetRuntimeError("cannot read /srv/secret/model/joint.onnx"), 500, "internal_error"),
        (AudioDecodeError("cannot decode audio from /tmp/upload-123.wav: Format not recognised"), 400,
         "invalid_audio"),
    ],
    ids=["unexpected", "engine-error", "decode-error-with-a-path"],
)
def test_failures_never_echo_paths_or_reprs(reference: Engine, monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture, exc: BaseException, status: int,
                                            code: str) -> None:
    monkeypatch.setattr(Engine, "transcribe_async", _raising(exc))
    with caplog.at_level(logging.WARNING, logger="parakeet_runtime.engine.serving.server"):
        response = _in_process_post(create_app(reference), {})
    assert response.status_code == status
    error = response.json()["error"]
    assert error["code"] == code and error["message"]
    _assert_safe(response.text)
    assert "Traceback" not in response.text
    assert str(exc) in caplog.text  # the detail goes to the server log, not to the client


def test_engine_queue_full_is_503_with_retry_after(reference: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Engine, "transcribe_async", _raising(EngineOverloadedError("64 requests already waiting")))
    response = _in_process_post(create_app(reference, ServerOptions(retry_after_s=3)), {})
    assert response.status_code == 503
    assert response.headers["retry-after"] == "3" and response.json()["error"]["code"] == "overloaded"


def test_in_flight_limit_gets_503_then_recovers(reference: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """``max_in_flight=1``: the first request holds the only slot (its transcription waits on an event) while
    the second arrives; the second gets 503 + Retry-After, the first then completes with the real transcript,
    and a third request is served. Deterministic: no burst, no timing."""
    real = Engine.transcribe_async
    expected = reference.transcribe(sample_audio_path()).text
    app = create_app(reference, ServerOptions(max_in_flight=1, retry_after_s=2))

    async def scenario() -> tuple[httpx.Response, httpx.Response, httpx.Response]:
        entered = asyncio.Event()
        release = asyncio.Event()

        async def gated(self: Engine, audio: Any, *, sample_rate: int | None = None) -> Any:
            entered.set()
            await release.wait()
            return await real(self, audio, sample_rate=sample_rate)

        monkeypatch.setattr(Engine, "transcribe_async", gated)
        files = {"file": ("a.wav", sample_audio_path().read_bytes())}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            first = asyncio.ensure_future(client.post("/v1/audio/transcriptions", files=files, data={"model": "p"}))
            await asyncio.wait_for(entered.wait(), timeout=30)
            second = await client.post("/v1/audio/transcriptions", files=files, data={"model": "p"})
            assert not first.done()  # the second was answered while the first held the slot
            release.set()
            first_response = await asyncio.wait_for(first, timeout=60)
            third = await client.post("/v1/audio/transcriptions", files=files, data={"model": "p"})
        return first_response, second, third

    first, second, third = asyncio.run(scenario())
    assert second.status_code == 503
    assert second.headers["retry-after"] == "2" and second.json()["error"]["code"] == "overloaded"
    assert first.status_code == 200 and first.json()["text"] == expected
    assert third.status_code == 200 and third.json()["text"] == expected


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


def _mounted(app: Any) -> Any:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    return Starlette(routes=[Mount("/asr", app=app)])


async def _until_ready(client: httpx.AsyncClient) -> httpx.Response:
    for _ in range(1200):
        health = await client.get("/asr/health")
        if health.json()["status"] != "loading":
            return health
        await asyncio.sleep(0.05)
    raise AssertionError("the mounted app never finished loading")


def test_a_mounted_app_loads_and_warms_up_at_its_first_request(reference: Engine,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """Starlette runs no lifespan of a mounted app: created with a function that loads the engine and a warm-up,
    the app starts both at its first request, in the background, answers 503 (``loading``, ``not_ready``) until
    they are over, then serves; before, it answered 503 forever."""
    warmed: list[float] = []

    def warm_up(self: Engine, seconds: float, *, batch: int = 1) -> float:
        warmed.append(seconds)
        return 0.0

    monkeypatch.setattr(Engine, "warm_up", warm_up)
    release = threading.Event()

    def loader() -> Engine:
        release.wait(60)
        return reference

    host = _mounted(create_app(loader, ServerOptions(warm_up_seconds=0.5)))
    audio = sample_audio_path().read_bytes()

    async def go() -> tuple[httpx.Response, ...]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://test") as client:
            loading = await client.get("/asr/health")
            refused = await client.post("/asr/v1/audio/transcriptions", files={"file": ("a.wav", audio)},
                                        data={"model": "p"})
            release.set()
            ready = await _until_ready(client)
            served = await client.post("/asr/v1/audio/transcriptions", files={"file": ("a.wav", audio)},
                                       data={"model": "p"}, timeout=60)
            return loading, refused, ready, served

    loading, refused, ready, served = asyncio.run(go())
    assert loading.status_code == 503 and loading.json() == {"status": "loading"}
    assert refused.status_code == 503 and refused.json()["error"]["code"] == "not_ready"
    assert ready.status_code == 200 and ready.json()["status"] == "ok"
    assert warmed == [0.5]
    assert served.status_code == 200 and served.json()["text"] == reference.transcribe(sample_audio_path()).text


def test_a_mounted_app_whose_model_fails_to_load_says_so(caplog: pytest.LogCaptureFixture) -> None:
    def loader() -> Engine:
        raise ParakeetRuntimeError("no such model")

    host = _mounted(create_app(loader))

    async def go() -> tuple[httpx.Response, httpx.Response]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=host), base_url="http://test") as client:
            await client.get("/asr/health")
            failed = await _until_ready(client)
            refused = await client.post("/asr/v1/audio/transcriptions", files={"file": ("a.wav", b"RIFF")},
                                        data={"model": "p"})
            return failed, refused

    with caplog.at_level(logging.ERROR, logger="parakeet_runtime.engine.serving.server"):
        failed, refused = asyncio.run(go())
    assert failed.status_code == 503 and failed.json() == {"status": "failed"}
    assert refused.status_code == 503 and "could not be loaded" in refused.json()["error"]["message"]
    assert "no such model" in caplog.text


def test_a_host_may_run_the_mounted_apps_lifespan(reference: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Starlette(lifespan=app.router.lifespan_context)`` (FastAPI's ``lifespan=`` alike) runs the mounted app's
    start-up with the host's: ready at the first request, and the engine closed at shutdown."""
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.testclient import TestClient

    closed: list[bool] = []
    monkeypatch.setattr(Engine, "close", lambda self, drain=True, timeout=None: closed.append(drain))
    asr = create_app(lambda: reference, ServerOptions(close_engine_on_shutdown=True))
    host = Starlette(routes=[Mount("/asr", app=asr)], lifespan=asr.router.lifespan_context)
    with TestClient(host) as client:
        health = client.get("/asr/health")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert not closed
    assert closed == [False]


def test_example_mount_in_fastapi(reference: Engine) -> None:
    port = _free_port()
    process = _ServerProcess([sys.executable, "-m", "uvicorn", "examples.mount_in_fastapi:app", "--host",
                              "127.0.0.1", "--port", str(port), "--log-level", "info"], cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_listening()
        assert httpx.get(f"{url}/", timeout=10).json()["service"] == "my service"
        response = httpx.post(f"{url}/asr/v1/audio/transcriptions",
                              files={"file": ("s.wav", sample_audio_path().read_bytes())}, data={"model": "p"},
                              timeout=60)
        assert response.status_code == 200
        assert response.json()["text"] == reference.transcribe(sample_audio_path()).text
        assert httpx.get(f"{url}/asr/health").status_code == 200
    finally:
        process.stop()


def test_client_disconnect_cancels_the_work(monkeypatch: pytest.MonkeyPatch) -> None:
    """In-process ASGI: the client goes away while its request waits; the work is cancelled, not leaked."""
    engine = Engine.load(batching=BatchingOptions(enabled=False))
    cancelled = asyncio.Event()
    started = asyncio.Event()

    async def slow(_self: Engine, _audio: object) -> object:
        started.set()
        try:
            await asyncio.Event().wait()  # never set: only cancellation ends it
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
