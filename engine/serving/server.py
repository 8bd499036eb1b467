"""An ASGI application with an OpenAI-compatible transcription endpoint.

``create_app(engine)`` returns a Starlette app that can run on its own (``parakeet-runtime serve``) or be
mounted in another ASGI application (``fastapi_app.mount("/asr", create_app(engine))``). It needs the
``server`` extra (starlette, python-multipart, and uvicorn for ``serve``).

Endpoints:

* ``POST /v1/audio/transcriptions`` — multipart ``file``, ``model``, ``response_format`` (json, text, srt,
  vtt, verbose_json), ``timestamp_granularities[]`` (word, segment; with verbose_json); OpenAI's request and
  response shapes. Nothing is silently ignored: ``language`` must be an ISO 639-1 code the model declares
  (manifest ``languages``; where it declares none, any code is taken and the body's ``warnings`` say it was not
  checked), ``temperature`` must be 0 (greedy decoding), and ``prompt``, ``stream``, ``include[]`` and
  ``chunking_strategy`` get a 400 saying they are not supported, as does any field OpenAI does not define.
  ``model`` is accepted and not checked (one model per server). Times are rounded to the millisecond.
  verbose_json segments carry every field of OpenAI's (``tokens``, ``temperature``, ``avg_logprob``,
  ``compression_ratio``, ``no_speech_prob``: what each means for a TDT model is under :data:`GREEDY_TEMPERATURE`
  and below); ``avg_logprob`` is measured only when the engine computes confidence. An upload the audio reader
  accepted imperfect (a FLAC or Ogg file cut short: the text covers the audio before the cut) adds a
  ``warnings`` list of sentences to the json and verbose_json bodies; a clean upload's has no such key.
* ``GET /health`` — 200 with the model id once the model is loaded (and warmed up), 503 before (only a mounted
  app is reachable then: ``serve`` opens its port once loading is over; see :func:`create_app`).
* ``GET /v1/models``, ``GET /v1/models/{id}`` — the served model: its id (a slug, see
  :attr:`ServerOptions.model_name`), description and languages.

Every request runs through ``Engine.transcribe_async`` (the dynamic batcher), so the event loop never
blocks. Uploads are bounded in size (413), in audio duration (400 ``audio_too_long``, from the file's header
before decoding: :attr:`ServerOptions.max_audio_s`) and in time (the headers must arrive within
:attr:`ServerOptions.header_timeout_s` under ``serve``, the whole body within :attr:`ServerOptions.body_timeout_s`,
else 408), the number of requests in flight is bounded (503 with
Retry-After; a request takes its slot only once its upload is complete, so slow uploads cannot hold slots),
bad audio is a 400 in OpenAI's error shape, and a client that disconnects has its request cancelled (logged at
DEBUG, never an ERROR traceback). An optional API key (``Authorization: Bearer KEY``, 401 otherwise; ``/health``
stays open) and CORS origins are :class:`ServerOptions` fields. Work the server host cancels at shutdown (uvicorn
after its graceful-shutdown period) is answered 503 ``shutting_down``, never 500.
Error bodies never carry object reprs, file paths or tracebacks: an unexpected failure is a 500 with a
generic message, and the detail goes to this module's logger. Unknown paths, wrong methods, WebSocket handshakes
(there is no WebSocket endpoint) and refused CORS preflights get errors in the same shape.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import hmac
import io
import logging
import math
import re
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar

import soundfile
from starlette.applications import Starlette
from starlette.datastructures import FormData, Headers, UploadFile
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket

from ..engine import Engine
from ..errors import (
    AudioDecodeError,
    AudioTooLongError,
    EngineClosedError,
    EngineOverloadedError,
    ParakeetRuntimeError,
)
from ..memory import release_free_memory
from ..requests.audio import UNKNOWN_LENGTH, joined_seconds
from ..requests.containers import declared_seconds
from ..requests.riff import finished_header
from ..results import TimedText, Token, Transcript
from .formats import round_time, to_srt, to_vtt
from .options import ServerOptions as ServerOptions  # where it was before serving.options existed

logger = logging.getLogger(__name__)

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
FIELDS = frozenset({"file", "model", "response_format", "timestamp_granularities[]", "timestamp_granularities",
                    "language", "prompt", "temperature", "stream", "include[]", "include", "chunking_strategy"})
"""The form fields of OpenAI's transcription request; anything else is refused, as OpenAI does."""
LIST_FIELDS = frozenset({"timestamp_granularities[]", "timestamp_granularities"})
"""The fields that may be given more than once (each value is checked); the others only once."""
T = TypeVar("T")
RELEASE_AFTER_BYTES = 1024 * 1024
RELEASE_AFTER_S = 60.0
"""After a request whose upload was at least this large, or whose audio was at least this long, or that failed in
the engine, the free memory of the malloc heaps is returned to the system (:class:`_MemoryReleaser`)."""
RELEASE_INTERVAL_S = 1.0

SHUTDOWN_CLOSE_S = 1.0
"""How long the server's shutdown waits for the engine's worker after uvicorn's graceful shutdown."""

FORM_FIELD_BYTES = 64 * 1024
"""Largest text field of the form (the audio, the 'file' part, is bounded only by the upload limit)."""

_SLUG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE = re.compile(r"0x[0-9a-fA-F]+|object at|Traceback|File \"|(?:^|[\s'\"(=:])(?:~?/|[A-Za-z]:\\)\S")
"""What must never reach an error body: addresses, object reprs, tracebacks, file paths."""


class _ApiError(Exception):
    def __init__(self, status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None, echoes_client: bool = False) -> None:
        """``echoes_client``: the message is the server's own words around values the client sent (a field's
        name or value): shown as it is (``_public`` would take ``language=/etc`` for a path and hide the reason)."""
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind
        self.param = param
        self.code = code
        self.headers = headers or {}
        self.echoes_client = echoes_client

    def response(self) -> JSONResponse:
        message = self.message if self.echoes_client else _public(self.message)
        body = {"error": {"message": message, "type": self.kind, "param": self.param, "code": self.code}}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def _public(message: str) -> str:
    """``message``, unless it shows what a client must not see (a repr, an address, a path, a traceback):
    then a generic sentence, and the message goes to the log."""
    if _UNSAFE.search(message) is None:
        return message
    logger.warning("error message withheld from the client: %s", message)
    return "the request could not be processed (details are in the server log)"


def _shutting_down() -> _ApiError:
    return _ApiError(503, "the server is shutting down; retry on another instance", kind="server_error",
                     code="shutting_down", headers={"Connection": "close"})


class _State:
    """The app's engine slot: filled at startup (or at creation when an engine is passed), ready once warmed up."""

    def __init__(self) -> None:
        self.engine: Engine | None = None
        self.ready = False
        """The engine is loaded and warmed up: requests are served."""
        self.started = False
        """The start-up (loading, warm-up) has begun: in the app's lifespan, or at its first request where the
        host never ran the lifespan (Starlette runs no lifespan of a mounted app)."""
        self.failed = False
        """The start-up begun at a first request failed (its error is in the log): the app answers 503."""
        self.starting: asyncio.Task[None] | None = None
        """That start-up's task, held so that the event loop does not drop it (it keeps weak references only)."""
        self.in_flight = 0


def _release(collect: bool) -> bool:
    if collect:
        # A failed request's exceptions hold tracebacks whose frames hold those exceptions (a handler's saved
        # ``refusal``, a chained ``__cause__``): reference cycles that keep the request's upload, audio and features
        # alive until the cycle collector happens to run a full collection.
        gc.collect()
    return release_free_memory()


class _MemoryReleaser:
    """Returns freed memory to the system after large or failed requests (glibc keeps part of it in its heaps
    otherwise: :func:`.memory.release_free_memory`; after a failure, a cycle collection first), in a worker
    thread, at most once per :data:`RELEASE_INTERVAL_S`; a request within the interval gets one release at its
    end, so the last large or failed request is always followed by one."""

    def __init__(self) -> None:
        self._pending = False
        self._collect = False
        self._next_allowed = 0.0
        self._running: set[asyncio.Future[bool]] = set()

    def request(self, *, collect: bool = False) -> None:
        self._collect = self._collect or collect
        if self._pending:
            return
        self._pending = True
        loop = asyncio.get_running_loop()
        loop.call_later(max(0.0, self._next_allowed - loop.time()), self._run, loop)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        collect, self._collect, self._pending = self._collect, False, False
        self._next_allowed = loop.time() + RELEASE_INTERVAL_S
        future = loop.run_in_executor(None, _release, collect)
        self._running.add(future)  # keep a reference until it is done
        future.add_done_callback(self._running.discard)


def create_app(
    engine: Engine | Callable[[], Engine],
    options: ServerOptions | None = None,
) -> Starlette:
    """Build the ASGI app.

    Start-up (loading, ``ServerOptions.warm_up_seconds``) runs in the app's lifespan: under ``serve`` (uvicorn) the
    port opens once it is over, and at shutdown the engine is closed (``ServerOptions.close_engine_on_shutdown``).
    Starlette runs no lifespan of a mounted app: there the start-up begins at the app's first request, in the
    background (``/health`` and every request answer 503 until it is over; a failed load stays 503, its error in
    the log), and nothing is closed at shutdown: the engine's owner closes it. A host can run the app's lifespan
    itself instead (``FastAPI(lifespan=app.router.lifespan_context)``, ``app`` this function's result).

    Args:
        engine: a loaded engine, or a function that loads one; a function runs in a worker thread at
            startup, and ``/health`` answers 503 until it returns (and the warm-up, if any, is done).
        options: HTTP limits (default: :class:`ServerOptions`).
    """
    opts = options or ServerOptions()
    state = _State()
    releaser = _MemoryReleaser()
    if isinstance(engine, Engine):
        # held to the server's limit while decoding too: an upload whose header declares no length (a FLAC of
        # unknown length, ADTS) stops decoding past it instead of being decoded and transcribed in full
        state.engine = engine.with_max_audio_seconds(opts.max_audio_s)

    async def load() -> Engine:
        if state.engine is None:
            loader = engine
            assert callable(loader)
            state.engine = (await asyncio.to_thread(loader)).with_max_audio_seconds(opts.max_audio_s)
            logger.info("model loaded from %s", state.engine.model_dir)
        return state.engine

    async def warm_up(loaded: Engine) -> None:
        if opts.warm_up_seconds is not None:
            took = await asyncio.to_thread(loaded.warm_up, opts.warm_up_seconds, batch=opts.warm_up_batch)
            logger.info("warmed up on %d × %g s of silence in %.1f s", opts.warm_up_batch, opts.warm_up_seconds, took)
        state.ready = True

    async def start_unhosted() -> None:
        try:
            await warm_up(await load())
        except Exception:
            state.failed = True
            logger.exception("the model could not be loaded or warmed up; every request is answered 503")

    def start_if_unhosted() -> None:
        """A first request where the host never ran the lifespan (a mounted app): load and warm up in the
        background (requests get 503 meanwhile); the engine is then closed by its owner, not at shutdown."""
        if state.started:
            return
        state.started = True
        if state.engine is not None and opts.warm_up_seconds is None:
            state.ready = True  # nothing to do: the engine given to create_app serves from the first request
        else:
            state.starting = asyncio.get_running_loop().create_task(start_unhosted())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.started = True
        loaded = await load()
        try:
            await warm_up(loaded)  # inside: an engine that fails it is still closed below
            yield
        finally:
            if opts.close_engine_on_shutdown and state.engine is not None:
                # uvicorn's graceful shutdown is over: every request has been answered (200, or 503 after the
                # grace period), so nothing waits for the engine's work; the batch it is running is not waited
                # for beyond SHUTDOWN_CLOSE_S (it ran up to 30 s more, past --shutdown-grace-s).
                await asyncio.to_thread(state.engine.close, drain=False, timeout=SHUTDOWN_CLOSE_S)

    def ready_engine() -> Engine:
        start_if_unhosted()
        if state.failed:
            raise _ApiError(503, "the model could not be loaded (details are in the server log)",
                            kind="server_error", code="not_ready")
        if not state.ready or state.engine is None:
            raise _ApiError(503, "the model is still loading", kind="server_error", code="not_ready",
                            headers={"Retry-After": str(opts.retry_after_s)})
        return state.engine

    async def health(request: Request) -> Response:
        start_if_unhosted()
        if state.failed:
            return JSONResponse({"status": "failed"}, status_code=503)
        if not state.ready or state.engine is None:
            return JSONResponse({"status": "loading"}, status_code=503,
                                headers={"Retry-After": str(opts.retry_after_s)})
        return JSONResponse({"status": "ok", "model": _model_id(state.engine, opts)})

    expected_key = None if opts.api_key is None else opts.api_key.encode()

    def authorize(request: Request) -> None:
        if expected_key is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected_key):
            raise _ApiError(401, "missing or incorrect API key: send 'Authorization: Bearer <key>'",
                            code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})

    async def models(request: Request) -> Response:
        try:
            authorize(request)
            current = ready_engine()
        except _ApiError as exc:
            return exc.response()
        return JSONResponse({"object": "list", "data": [_model_card(current, opts)]})

    async def model(request: Request) -> Response:
        try:
            authorize(request)
            current = ready_engine()
            card = _model_card(current, opts)
            if request.path_params["model"] != card["id"]:
                raise _ApiError(404, f"this server serves one model, {card['id']!r}", param="model",
                                code="model_not_found")
        except _ApiError as exc:
            return exc.response()
        return JSONResponse(card)

    async def transcriptions(request: Request) -> Response:
        taken = False
        try:
            authorize(request)
            current = ready_engine()
            body = await _read_body(request, opts.max_upload_bytes, opts.body_timeout_s)
            if state.in_flight >= opts.max_in_flight:
                raise _ApiError(503, "server overloaded; retry later", kind="server_error", code="overloaded",
                                headers={"Retry-After": str(opts.retry_after_s)})
            state.in_flight += 1
            taken = True
            return await _transcribe(request, body, current, opts, releaser)
        except _ApiError as exc:
            return exc.response()
        except asyncio.CancelledError:
            # The server host cancels what outlives its graceful shutdown (uvicorn: shutdown_grace_s): answer
            # 503 rather than let the host turn it into a 500. The work itself was cancelled with this task.
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            logger.warning("request cancelled by the server's shutdown; answered 503")
            return _shutting_down().response()
        except Exception:
            logger.exception("transcription request failed")
            return _ApiError(500, "internal error while transcribing (details are in the server log)",
                             kind="server_error", code="internal_error").response()
        finally:
            if taken:
                state.in_flight -= 1

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/v1/models/{model:path}", model, methods=["GET"]),
        Route("/v1/audio/transcriptions", transcriptions, methods=["POST"]),
    ]
    middleware = []
    if opts.cors_origins:
        middleware.append(Middleware(_CorsMiddleware, allow_origins=list(opts.cors_origins),
                                     allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"]))
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers={404: _unrouted, 405: _unrouted})
    # Starlette answers /health/ with a bodyless 307 to a URL built from the client's Host header (before the API
    # key is checked): such paths get the 404 of any other unknown path
    app.router.redirect_slashes = False
    app.router.default = _refusing_websockets(app.router.default)
    return app


class _CorsMiddleware(CORSMiddleware):
    """Starlette's CORS handling, with a refused preflight answered in OpenAI's error shape (Starlette's own is
    plain text)."""

    def preflight_response(self, request_headers: Headers) -> Response:
        response = super().preflight_response(request_headers)
        if response.status_code != 400:
            return response
        refused = bytes(response.body).decode("utf-8", "replace").removeprefix("Disallowed CORS ")
        headers = {key: value for key, value in response.headers.items()
                   if key.lower() not in ("content-length", "content-type")}
        return _ApiError(400, f"CORS preflight refused: this server does not allow the request's {refused}",
                         code="cors_refused", headers=headers).response()


def _refusing_websockets(default: ASGIApp) -> ASGIApp:
    """The router's answer to what no route matches, with a WebSocket handshake refused by a 404 in OpenAI's
    error shape (where the server can send one: uvicorn can; elsewhere the handshake is closed, which servers
    answer with a bodyless 403) instead of a bare 403: this server has no WebSocket endpoint."""

    async def not_found(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await default(scope, receive, send)
            return
        websocket = WebSocket(scope, receive, send)
        if "websocket.http.response" not in scope.get("extensions", {}):
            await websocket.close()
            return
        await websocket.send_denial_response(_ApiError(
            404, "no such endpoint (this server has no WebSocket endpoints; it serves the transcriptions and models "
            "endpoints over HTTP)", code="not_found").response())

    return not_found


async def _unrouted(request: Request, exc: Exception) -> Response:
    """404 and 405 as OpenAI-style JSON errors (Starlette's own are plain text), with 405's ``Allow``."""
    status = int(getattr(exc, "status_code", 404))
    headers = dict(getattr(exc, "headers", None) or {})
    if status == 405:
        return _ApiError(405, f"method {request.method[:16]} is not allowed here", code="method_not_allowed",
                         headers=headers).response()
    return _ApiError(404, "no such endpoint (this server serves the transcriptions and models endpoints)",
                     code="not_found", headers=headers).response()


def _model_id(engine: Engine, opts: ServerOptions) -> str:
    """See :attr:`ServerOptions.model_name`."""
    if opts.model_name:
        return opts.model_name
    for candidate in (engine.manifest.model_name.rstrip("/").rsplit("/", 1)[-1], engine.model_dir.name):
        if _SLUG.fullmatch(candidate):
            return candidate
    return re.sub(r"[^A-Za-z0-9._-]+", "-", engine.model_dir.name).strip("-._") or "parakeet"


def _model_card(engine: Engine, opts: ServerOptions) -> dict[str, Any]:
    created = int(engine.model_dir.joinpath("manifest.json").stat().st_mtime)
    return {"id": _model_id(engine, opts), "object": "model", "created": created, "owned_by": "parakeet-runtime",
            "description": engine.manifest.description, "languages": list(engine.manifest.languages)}


async def _read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The request body, at most ``limit`` bytes (else 413), all of it within ``timeout_s`` (else 408)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _ApiError(413, f"request body of {int(declared)} bytes exceeds the limit of {limit} bytes",
                        code="payload_too_large", headers={"Connection": "close"})
    body = bytearray()
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise _ApiError(413, f"request body exceeds the limit of {limit} bytes",
                                    code="payload_too_large", headers={"Connection": "close"})
    except TimeoutError as exc:
        logger.info("request body incomplete after %g s (%d bytes received); answered 408", timeout_s, len(body))
        raise _ApiError(408, f"the request body did not arrive within {timeout_s:g} s", code="request_timeout",
                        headers={"Connection": "close"}) from exc
    except ClientDisconnect as exc:
        logger.debug("client disconnected during the upload (%d bytes received)", len(body))
        raise _ApiError(499, "client closed the request", code="client_closed") from exc
    return bytes(body)


async def _transcribe(request: Request, body: bytes, engine: Engine, opts: ServerOptions,
                      releaser: _MemoryReleaser) -> Response:
    request._body = body  # let Starlette's form parser read the bounded body we already hold
    try:
        form = await _read_form(request)
    except Exception as exc:  # starlette raises its own parse errors
        logger.debug("unreadable form: %s", exc)
        detail = str(exc.detail) if isinstance(exc, HTTPException) else ""  # Starlette's own (fixed) sentences
        if "too many files" in detail.lower():  # max_files=1: a second file part (or a second 'file' part)
            raise _ApiError(400, "one 'file' field per request: the form has more than one file part",
                            param="file") from exc
        if detail:  # too many fields, a part over the size limit, no boundary, a part without a name, ...
            raise _ApiError(400, f"unreadable multipart form: {detail.rstrip('.')} (the form takes a 'file' field, "
                            "the audio, and OpenAI's short text fields)", param="file") from exc
        raise _ApiError(400, "expected a multipart form with a 'file' field (an audio file)", param="file") from exc
    try:
        if len(form.getlist("file")) > 1:  # a text part named 'file' beside the file part: never one ignored
            raise _ApiError(400, "one 'file' field per request: the form has more than one", param="file")
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise _ApiError(400, "missing the 'file' field (an audio file)", param="file")
        fields: dict[str, str] = {}
        for key, value in form.multi_items():
            if key not in FIELDS:
                raise _ApiError(400, f"unrecognized request argument: {key[:64]!r}", param=key[:64],
                                echoes_client=True)
            if isinstance(value, str) and key not in LIST_FIELDS:
                if key in fields:  # only one value would be read: never one checked and another ignored
                    raise _ApiError(400, f"the field {key!r} is given more than once", param=key)
                fields[key] = value
        _check_unsupported(fields, engine)
        response_format = fields.get("response_format") or "json"
        if response_format not in RESPONSE_FORMATS:
            raise _ApiError(400, f"response_format must be one of {', '.join(RESPONSE_FORMATS)}",
                            param="response_format")
        given = [(key, str(g)) for key in ("timestamp_granularities[]", "timestamp_granularities")
                 for g in form.getlist(key)]
        granularities = [g for _, g in given]
        for key, value in given:
            if value not in GRANULARITIES:
                raise _ApiError(400, f"unknown timestamp granularity {value[:64]!r}; use word or segment", param=key,
                                echoes_client=True)
        if given and response_format != "verbose_json":
            raise _ApiError(400, f"{given[0][0]} needs response_format=verbose_json", param=given[0][0])
        audio = await upload.read()
    finally:
        await form.close()

    await asyncio.to_thread(_check_declared_duration, audio, opts.max_audio_s, engine.preparer.max_seconds)
    started = time.perf_counter()
    try:
        transcript = await _unless_disconnected(request, engine.transcribe_async(audio))
    except (EngineOverloadedError, EngineClosedError) as exc:  # refused before any work: nothing to release
        if isinstance(exc, EngineClosedError):
            raise _shutting_down() from exc
        raise _ApiError(503, str(exc), kind="server_error", code="overloaded",
                        headers={"Retry-After": str(opts.retry_after_s)}) from exc
    except BaseException as exc:
        releaser.request(collect=True)  # it may have failed late (after decoding and features): return what it held
        if isinstance(exc, AudioDecodeError):
            raise _ApiError(400, f"could not decode the audio file: {exc}", param="file",
                            code="invalid_audio") from exc
        if isinstance(exc, AudioTooLongError):
            message = str(exc)
            if exc.seconds is not None and exc.limit == opts.max_audio_s:  # the server's own limit, met decoding
                message = _too_long_for_server(exc.seconds, opts.max_audio_s, at_least=exc.at_least)
            raise _ApiError(400, message, param="file", code="audio_too_long") from exc
        if isinstance(exc, ParakeetRuntimeError):
            logger.error("transcription failed: %s", exc)
            raise _ApiError(500, "internal error while transcribing (details are in the server log)",
                            kind="server_error", code="internal_error") from exc
        raise
    if len(audio) >= RELEASE_AFTER_BYTES or transcript.duration >= RELEASE_AFTER_S:
        releaser.request()
    logger.debug("transcribed %.1f s of audio in %.3f s", transcript.duration, time.perf_counter() - started)
    if transcript.duration > opts.max_audio_s:  # a format whose header declares no length (ADTS, live WebM, ...)
        raise _ApiError(400, _too_long_for_server(transcript.duration, opts.max_audio_s), param="file",
                        code="audio_too_long")
    declared = engine.manifest.languages
    return _render(transcript, response_format, granularities, _language(fields, declared),
                   _language_warnings(fields, declared))


class _FileFieldParser(MultiPartParser):
    """Starlette's multipart parser, except that the 'file' part is the upload even without a filename.

    A part without ``filename`` is a text field to Starlette, held to :data:`FORM_FIELD_BYTES`: the ``openai``
    client given ``file=(None, data)`` or ``("", data)``, ``requests`` given ``files={"file": (None, data)}`` and
    ``curl -F file=<clip.wav`` send the audio so, and got "Part exceeded maximum size of 64KB" (or, for a short
    clip, "missing the 'file' field"). The server reads the audio from its bytes, never from its name."""

    def on_headers_finished(self) -> None:
        super().on_headers_finished()
        part = self._current_part
        if part.file is None and part.field_name == "file":  # no filename: taken for a text field; made a file
            self._current_fields -= 1
            part.content_disposition = (part.content_disposition or b"") + b'; filename=""'
            super().on_headers_finished()


async def _read_form(request: Request) -> FormData:
    """The request's form: one file part at most, 32 fields, text fields of :data:`FORM_FIELD_BYTES`; a
    multipart form through :class:`_FileFieldParser`. A malformed form raises Starlette's ``HTTPException``."""
    content_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
    if content_type != "multipart/form-data":
        return await request.form(max_files=1, max_fields=32, max_part_size=FORM_FIELD_BYTES)
    parser = _FileFieldParser(request.headers, request.stream(), max_files=1, max_fields=32,
                              max_part_size=FORM_FIELD_BYTES)
    try:
        return await parser.parse()
    except MultiPartException as exc:  # as request.form() reports it
        raise HTTPException(status_code=400, detail=exc.message) from exc
    except (AttributeError, TypeError) as exc:  # a Starlette whose parser internals differ: its own parsing
        logger.warning("multipart parser extension unavailable with this Starlette (%s); a 'file' part without a "
                       "filename is then read as a text field", exc)
        return await request.form(max_files=1, max_fields=32, max_part_size=FORM_FIELD_BYTES)


LANGUAGE_NAMES = {
    "bg": "bulgarian", "ca": "catalan", "cs": "czech", "da": "danish", "de": "german", "el": "greek", "en": "english",
    "es": "spanish", "et": "estonian", "fi": "finnish", "fr": "french", "hr": "croatian", "hu": "hungarian",
    "it": "italian", "lt": "lithuanian", "lv": "latvian", "mt": "maltese", "nl": "dutch", "no": "norwegian",
    "pl": "polish", "pt": "portuguese", "ro": "romanian", "ru": "russian", "sk": "slovak", "sl": "slovenian",
    "sv": "swedish", "uk": "ukrainian", "ar": "arabic", "hi": "hindi", "ja": "japanese", "ko": "korean",
    "tr": "turkish", "zh": "chinese", "vi": "vietnamese", "id": "indonesian", "he": "hebrew", "fa": "persian",
    "th": "thai",
}
"""verbose_json names a language as OpenAI's does (``"english"``), from its ISO 639-1 code; a code not in this
table is given as the code."""
_ISO_639_1 = re.compile(r"[a-z]{2}")


def _language(fields: dict[str, str], declared: Sequence[str]) -> str:
    """verbose_json's ``language``, named as OpenAI names it (:data:`LANGUAGE_NAMES`): the one asked for (checked),
    else the model's only declared language, else empty (a multilingual model does not say which it heard)."""
    code = fields.get("language", "").strip().lower() or (declared[0] if len(declared) == 1 else "")
    return LANGUAGE_NAMES.get(code, code)


def _language_warnings(fields: dict[str, str], declared: Sequence[str]) -> list[str]:
    """The json and verbose_json bodies' ``warnings`` about ``language``: one where the model declares no languages
    (the code was accepted unchecked)."""
    asked = fields.get("language", "").strip()
    if asked and not declared:
        return [f"language {asked[:16]!r} was not checked: this model does not declare the languages it transcribes "
                "(its manifest lists none)"]
    return []


def _check_declared_duration(audio: bytes, server_limit: float, model_limit: float | None) -> None:
    """400 ``audio_too_long`` when the file's header declares more than ``server_limit`` seconds (or more than
    ``model_limit``, when that is lower), before anything is decoded. Only headers are read: soundfile's (every
    stream's of a chained Ogg file or of joined FLACs: :func:`~..requests.audio.joined_seconds`), else a
    container's (MP4/M4A, WebM: :func:`~parakeet_runtime.engine.requests.containers.declared_seconds`). A file
    whose header declares no length (ADTS, a live WebM, garbage) is left to the engine, whose decoder stops past
    the model's limit; the decoded length is then held to the server's."""
    try:
        info = soundfile.info(finished_header(io.BytesIO(audio)))  # an unfinished WAV's length: to its end
        frames, rate = int(info.frames), int(info.samplerate)
    except Exception as exc:  # libsndfile's errors, and anything its header parsing raises
        declared = declared_seconds(audio)
        if declared is None:
            logger.debug("no readable header for the duration check (%s); left to the engine", type(exc).__name__)
            return
        seconds = declared
    else:
        if rate <= 0 or frames < 0:
            return  # an impossible header: the engine's decoder refuses it with its own message
        if frames >= UNKNOWN_LENGTH:
            return  # a stream of unknown length (a FLAC written to a pipe): left to the engine, as above
        seconds = frames / rate
        chained = joined_seconds(audio)  # soundfile's header is the first stream's only
        if chained is not None:
            seconds = max(seconds, chained)
    if model_limit is not None and seconds > model_limit and model_limit < server_limit:
        raise _ApiError(400, f"audio of {seconds:.1f} s is longer than this engine accepts "
                        f"({model_limit:g} s); split it into shorter pieces", param="file",
                        code="audio_too_long")
    if seconds > server_limit:
        raise _ApiError(400, _too_long_for_server(seconds, server_limit), param="file", code="audio_too_long")


def _too_long_for_server(seconds: float, limit: float, *, at_least: bool = False) -> str:
    how = "at least " if at_least else ""
    return f"audio of {how}{seconds:.1f} s is longer than this server accepts ({limit:g} s per request); split " \
        "it into shorter pieces"


def _check_unsupported(fields: dict[str, str], engine: Engine) -> None:
    """Refuse, with the reason, every OpenAI option this server cannot honour (never accept and ignore)."""
    language = fields.get("language", "").strip()
    if language:
        supported = engine.manifest.languages
        if not _ISO_639_1.fullmatch(language.lower()):
            raise _ApiError(400, f"language {language[:16]!r} is not an ISO 639-1 code (two letters, e.g. 'en'), "
                            "or omit 'language'", param="language", code="unsupported_language", echoes_client=True)
        if supported and language.lower() not in supported:
            raise _ApiError(400, f"language {language[:16]!r} is not supported by this model; it transcribes: "
                            f"{', '.join(supported)} (ISO 639-1), or omit 'language'", param="language",
                            code="unsupported_language", echoes_client=True)
    if fields.get("prompt", "").strip():
        raise _ApiError(400, "prompt is not supported: this model does not take a text prompt; omit 'prompt'",
                        param="prompt", code="unsupported_parameter")
    temperature = fields.get("temperature", "").strip()
    if temperature:
        try:
            value = float(temperature)
        except ValueError:
            value = math.nan
        if value != 0.0:
            raise _ApiError(400, f"temperature {temperature[:16]!r} is not supported: greedy decoding only, so "
                            "temperature must be 0 (or omitted)", param="temperature", code="unsupported_parameter",
                            echoes_client=True)
    if fields.get("stream", "").strip().lower() not in ("", "false", "0"):
        raise _ApiError(400, "stream is not supported: the transcript comes in one response; omit 'stream'",
                        param="stream", code="unsupported_parameter")
    for key in ("include[]", "include"):
        if key in fields:
            raise _ApiError(400, "include is not supported (no log probabilities); omit 'include[]'", param=key,
                            code="unsupported_parameter")
    if fields.get("chunking_strategy", "").strip():
        raise _ApiError(400, "chunking_strategy is not supported: each file is transcribed in one pass; omit "
                        "'chunking_strategy'", param="chunking_strategy", code="unsupported_parameter")


async def _unless_disconnected(request: Request, work: Awaitable[T]) -> T:
    """Await ``work``; if the client disconnects first, cancel it (a queued request is then dropped)."""
    task = asyncio.ensure_future(work)
    try:
        while not task.done():
            await asyncio.wait({task}, timeout=0.25)
            if not task.done() and await request.is_disconnected():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
                logger.debug("client disconnected while its request was transcribed; cancelled")
                raise _ApiError(499, "client closed the request", code="client_closed")
    except asyncio.CancelledError:
        task.cancel()  # this request is cancelled (the server shuts down): so is its transcription
        raise
    try:
        return task.result()
    finally:
        # A failure's traceback holds this frame: with ``task`` (which holds the exception) still in it, the two
        # would form a reference cycle keeping the request's upload, audio and features alive until the cycle
        # collector happens to run (+110 MB of RSS per failed 4-minute request of 44.1 kHz stereo).
        del task


def _confidence(item: TimedText) -> dict[str, float]:
    """``{"confidence": ...}`` where the engine computed it, else nothing."""
    return {} if item.confidence is None else {"confidence": item.confidence}


def _render(transcript: Transcript, response_format: str, granularities: list[str], language: str = "",
            notes: Sequence[str] = ()) -> Response:
    """The response body; ``notes``: warnings of the server's own, before the transcript's."""
    if response_format == "text":
        return PlainTextResponse(transcript.text)
    if response_format == "srt":
        return PlainTextResponse(to_srt(transcript))
    if response_format == "vtt":
        return PlainTextResponse(to_vtt(transcript), media_type="text/vtt")
    if response_format == "json":
        return JSONResponse({"text": transcript.text} | _warnings(transcript, notes))
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": language,
        "duration": round_time(transcript.duration),
        "text": transcript.text,
    }
    if "word" in granularities:  # a word without text (a lone word-boundary piece) is nobody's word
        body["words"] = [
            {"word": w.text, "start": round_time(w.start), "end": round_time(w.end)} | _confidence(w)
            for w in transcript.words if w.text
        ]
    if "segment" in granularities or not granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": 0,
                "start": round_time(s.start),
                "end": round_time(s.end),
                "text": s.text,
                **_segment_scores(s, transcript.tokens),
            } | _confidence(s)
            for i, s in enumerate(transcript.segments)
        ]
    return JSONResponse(body | _warnings(transcript, notes))


def _warnings(transcript: Transcript, notes: Sequence[str] = ()) -> dict[str, list[str]]:
    """``{"warnings": [...]}`` where the audio reader accepted the upload imperfect (a FLAC or Ogg file cut short:
    the text covers the audio before the cut) or the server notes something (``notes``: a ``language`` it could not
    check), else nothing: a clean upload's response keeps OpenAI's shape, and a client still learns that part of
    its recording was missing (the server's log is not the client's to read)."""
    found = [*notes, *transcript.warnings]
    return {"warnings": found} if found else {}


GREEDY_TEMPERATURE = 0.0
"""verbose_json's ``temperature``: the engine decodes greedily (argmax), which is sampling at temperature 0, and
requests asking for another are refused, so every segment was made at this one."""
NO_SPEECH_PROB = 0.0
"""verbose_json's ``no_speech_prob``. Whisper reads it from a no-speech token; a TDT model has none. A segment
exists only because the model emitted tokens there rather than blanks, which is its decision that there is speech
(silence gives no segment at all), so the probability the model gives to "no speech" in a segment is 0."""
UNMEASURED_LOGPROB = 0.0
"""verbose_json's ``avg_logprob`` where the engine computes no log-probabilities (loaded without ``confidence``: the
search then keeps no logits, and asking for them per request would reach into the batched search): OpenAI's schema
requires a number, and 0 is the one that flags nothing as failed (OpenAI: below -1 "consider the logprobs failed").
Such segments carry no ``confidence`` key, which is how a client tells an unmeasured 0 from a measured one."""


def _segment_scores(segment: TimedText, tokens: Sequence[Token]) -> dict[str, Any]:
    """The fields OpenAI's verbose_json segments have beyond times and text (its SDK's ``TranscriptionSegment``
    requires them): the segment's token ids, the temperature, the mean log-probability of its tokens, Whisper's
    compression ratio of its text and the no-speech probability. Token ids are in the model's vocabulary (not
    Whisper's); a segment built without token indices (not by the engine) lists none."""
    own = () if segment.first_token is None or segment.end_token is None else tokens[
        segment.first_token : segment.end_token]
    return {
        "tokens": [t.id for t in own],
        "temperature": GREEDY_TEMPERATURE,
        "avg_logprob": _avg_logprob(own),
        "compression_ratio": compression_ratio(segment.text),
        "no_speech_prob": NO_SPEECH_PROB,
    }


def _avg_logprob(tokens: Sequence[Token]) -> float:
    """The mean natural-log probability of ``tokens`` where the engine computed every one (confidence on), else
    :data:`UNMEASURED_LOGPROB`."""
    log_probs = [t.log_prob for t in tokens if t.log_prob is not None]
    if not log_probs or len(log_probs) != len(tokens):
        return UNMEASURED_LOGPROB
    return sum(log_probs) / len(log_probs)


def compression_ratio(text: str) -> float:
    """Whisper's ``get_compression_ratio``: UTF-8 bytes of ``text`` over their zlib-compressed size (high for
    repetitive text: Whisper reads above 2.4 as a decoding loop). Empty text gives 0.0 (0 bytes over zlib's
    8-byte empty stream), as in Whisper."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data))
