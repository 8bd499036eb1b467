"""Engine options: frozen, with documented defaults."""

from __future__ import annotations

from dataclasses import dataclass

from parakeet_runtime.decoding import ConfidenceOptions

__all__ = ["BatchingOptions", "ConfidenceOptions", "SessionOptions"]
"""``ConfidenceOptions`` (``Engine.load(confidence=...)``) lives with the decoding functions that use it."""


@dataclass(frozen=True)
class BatchingOptions:
    """How the engine groups work into batches.

    Concurrent single-input calls (from threads, or ``await engine.transcribe_async``) are queued and a
    worker thread runs them together: it takes the first waiting request, waits up to ``max_wait_ms`` for
    more, up to ``max_batch_size``, then encodes and decodes them as padded batches. Results are identical
    to one-at-a-time decoding. A list passed to ``transcribe`` is always sorted by length and bucketed.
    """

    enabled: bool = True
    """Coalesce concurrent calls through the dynamic batcher. ``False``: each call runs in its own thread."""
    max_batch_size: int = 16
    """Most utterances in one encoder batch."""
    max_wait_ms: float = 5.0
    """How long the batcher waits for batch-mates after the first request of a batch."""
    max_batch_seconds: float = 600.0
    """Most padded audio (batch size × longest utterance, in seconds) in one encoder batch; bounds memory."""
    max_length_ratio: float = 1.5
    """A batch's longest utterance is at most this many times its shortest; beyond it a new batch starts
    (padding short utterances to a long one costs encoder time, quadratically in attention)."""
    max_queue: int | None = None
    """Most requests waiting for the batcher; beyond it ``EngineOverloadedError`` (``None``: unbounded)."""
    max_concurrent_prepare: int | None = None
    """Most request threads decoding audio and computing features at once (``None``: the number of CPUs);
    the others wait their turn, so that the batcher's worker is not starved of the GIL."""

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {self.max_batch_size}")
        if self.max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {self.max_wait_ms}")
        if self.max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be > 0, got {self.max_batch_seconds}")
        if self.max_length_ratio < 1.0:
            raise ValueError(f"max_length_ratio must be >= 1, got {self.max_length_ratio}")
        if self.max_concurrent_prepare is not None and self.max_concurrent_prepare < 1:
            raise ValueError(f"max_concurrent_prepare must be >= 1 or None, got {self.max_concurrent_prepare}")
        if self.max_queue is not None and self.max_queue < 1:
            raise ValueError(f"max_queue must be >= 1 or None, got {self.max_queue}")


@dataclass(frozen=True)
class SessionOptions:
    """ONNX Runtime threading.

    The default suits a server: with batching on, one worker runs the graphs and may use every core;
    spinning is off so idle intra-op threads do not burn the cores that feature extraction and the
    request threads need.
    """

    threads: int | None = None
    """Intra-op threads for the encoder and for step graphs (predictor, joint) of 8 MB or more; smaller step
    graphs run on one thread (``None``: ONNX Runtime's default, one per physical core)."""
    spinning: bool = False
    """Let the encoder's idle intra-op threads spin (lower latency for a single stream, wasted CPU under
    load). A large predictor's threads (8 MB or more) always spin: its steps come back to back while
    decoding."""
    release_memory_above_seconds: float | None = 30.0
    """After an encoder run on more audio than this (summed over the batch, padding included), ONNX
    Runtime hands the memory its arena grew for that run back to the system. Long inputs need gigabytes
    of activations at Parakeet size (attention is quadratic in length); without this, the arena keeps
    them for the life of the engine and later batches of other shapes grow it further. Runs on shorter
    audio keep the warm arena, so short requests pay nothing. ``None``: never release."""

    def __post_init__(self) -> None:
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None, got {self.threads}")
        if self.release_memory_above_seconds is not None and self.release_memory_above_seconds < 0:
            raise ValueError(
                f"release_memory_above_seconds must be >= 0 or None, got {self.release_memory_above_seconds}")
