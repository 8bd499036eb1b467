"""The HTTP layer's limits: a frozen options class the server, ``serve`` and the Ray deployment share (no web
framework needed to build or check one)."""

from __future__ import annotations

from dataclasses import dataclass

from ..validation import check_flag, check_integer, check_number, check_text


@dataclass(frozen=True)
class ServerOptions:
    """Limits of the HTTP layer."""

    max_upload_bytes: int = 25 * 1024 * 1024
    """Largest request body accepted (OpenAI's limit is 25 MB); larger gets 413."""
    max_audio_s: float = 3600.0
    """Longest audio accepted per request, in seconds (or the model's own one-pass limit when that is lower);
    longer gets 400 ``audio_too_long``. It is read from the file's header before anything is decoded, so a
    small upload that declares hours of audio (a silent FLAC compresses ~1000:1) costs no decoding memory; a file
    whose header declares no length stops decoding just past it (the app holds its engine to it:
    :meth:`~parakeet_runtime.engine.Engine.with_max_audio_seconds`)."""
    max_in_flight: int = 64
    """Most transcription requests being processed at once (their upload complete); more get 503 with
    Retry-After. A request takes its slot only after its body has arrived, so slow uploads hold none."""
    header_timeout_s: float = 10.0
    """``serve``: a request's headers must arrive within this many seconds of the connection being made (or of the
    first byte of a later request on a kept-alive connection), else the connection is closed (with a 408 when part
    of the headers came): a client trickling header bytes, or connecting and sending nothing, cannot hold a
    connection (uvicorn has no such timeout; :mod:`.http11` adds it). A mounted app leaves this to its host
    server."""
    body_timeout_s: float = 30.0
    """The whole request body must arrive within this many seconds of the request's headers, else 408 (and the
    connection is closed): a client sending 1 byte/s, or a Content-Length larger than what it sends, cannot hold
    the server."""
    keep_alive_s: int = 5
    """``serve``: an idle keep-alive connection is closed after this many seconds (uvicorn's
    ``timeout_keep_alive``). A mounted app leaves this to its host server."""
    max_connections: int = 256
    """``serve``: most open connections (uvicorn's ``limit_concurrency``); a request on one more gets 503. With
    :attr:`max_upload_bytes` it bounds the memory held by uploads at about ``max_connections × max_upload_bytes``.
    A mounted app leaves this to its host server."""
    shutdown_grace_s: int = 30
    """``serve``: on SIGTERM/SIGINT, requests in flight get this many seconds to finish (uvicorn's
    ``timeout_graceful_shutdown``); those that cannot are answered 503 ``shutting_down``."""
    api_key: str | None = None
    """When set, every endpoint but ``/health`` needs ``Authorization: Bearer <api_key>`` (as OpenAI clients send
    it); otherwise 401 in OpenAI's error shape."""
    cors_origins: tuple[str, ...] = ()
    """Origins allowed to call the API from a browser (Starlette's CORSMiddleware; ``"*"`` for any); none by
    default, so browsers get no CORS headers."""
    retry_after_s: int = 1
    """The Retry-After value sent with 503."""
    model_name: str | None = None
    """The model id reported by ``/v1/models`` and ``/health``. Default: the manifest's ``model_name`` (a slug
    written by convert-model, e.g. ``parakeet-runtime-demo``; for a Hugging Face id such as
    ``nvidia/parakeet-tdt-0.6b-v2`` its last part), else the model directory's name."""
    close_engine_on_shutdown: bool = False
    """Close (draining) the engine when the app shuts down; ``serve`` sets it, mounted apps usually not."""
    warm_up_seconds: float | None = None
    """When set, the app's startup runs the engine once on this many seconds of silence
    (:meth:`~parakeet_runtime.engine.Engine.warm_up`) before it takes requests, so that the first requests up to
    that length do not pay the runtime's first-run costs (seconds at Parakeet's size; more with OpenVINO)."""
    warm_up_batch: int = 1
    """With :attr:`warm_up_seconds`: the warm-up runs this many inputs of that length as one batch, so that the first
    batches up to that size do not pay for their larger buffers either (set it to the batcher's
    ``max_batch_size`` where full batches of long inputs are expected; memory grows with the product)."""

    def __post_init__(self) -> None:
        for name in ("max_upload_bytes", "max_in_flight", "max_connections", "keep_alive_s", "shutdown_grace_s"):
            check_integer(self, name, 1)
        check_integer(self, "retry_after_s", 0)
        for name in ("max_audio_s", "header_timeout_s", "body_timeout_s"):
            check_number(self, name, 0, above=True, unit="seconds")
        check_text(self, "api_key", optional=True)
        check_flag(self, "close_engine_on_shutdown")
        check_number(self, "warm_up_seconds", 0, above=True, optional=True, maximum=self.max_audio_s,
                     maximum_field="max_audio_s", unit="seconds")
        check_integer(self, "warm_up_batch", 1)
