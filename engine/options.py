"""Engine options: frozen, with documented defaults."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, get_args

from parakeet_runtime.decoding import ConfidenceOptions

from .errors import OptionsError
from .validation import check_choice, check_flag, check_integer, check_number

__all__ = ["Backend", "BatchingOptions", "ConfidenceOptions", "DecoderWeights", "Int8Weights", "LongFormOptions",
           "Precision", "SessionOptions"]
"""``ConfidenceOptions`` (``Engine.load(confidence=...)``) lives with the decoding functions that use it."""


@dataclass(frozen=True)
class BatchingOptions:
    """How the engine groups work into batches.

    Concurrent single-input calls (from threads, or ``await engine.transcribe_async``) are queued and a
    worker thread runs them together: it takes the first waiting request, waits up to ``max_wait_ms`` for
    more, up to ``max_batch_size``, then encodes and decodes them as padded batches. Results are identical
    to one-at-a-time decoding (int8 and bf16 encoders, whose results would depend on their batch-mates, encode each
    input alone on the worker, except int8 directories with ``per-row-fixed`` (the default since 2026-12-05) or
    ``per-row-centred`` activations; int8 decoding weights are searched in batches where this machine gives a row
    the same values in a batch as alone, checked at load, else each row is decoded alone). A list passed to
    ``transcribe`` is always sorted by length and bucketed.
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
    """Most requests waiting for the batcher; beyond it ``EngineOverloadedError`` (``None``: unbounded). A list or a
    long input is refused only at its first piece: once taken, its later pieces wait for room."""
    max_concurrent_prepare: int | None = None
    """Most request threads decoding audio and computing features at once (``None``: the number of CPUs);
    the others wait their turn, so that the batcher's worker is not starved of the GIL."""

    def __post_init__(self) -> None:
        check_flag(self, "enabled")
        check_integer(self, "max_batch_size", 1)
        check_number(self, "max_wait_ms", 0, unit="milliseconds")
        check_number(self, "max_batch_seconds", 0, above=True, unit="seconds")
        check_number(self, "max_length_ratio", 1)
        check_integer(self, "max_concurrent_prepare", 1, optional=True)
        check_integer(self, "max_queue", 1, optional=True)


Int8Weights = Literal["auto", "uint8", "int7", "int8"]
"""Which encoder graph of an int8 directory to load: ``auto`` picks from the CPU's flags."""
Backend = Literal["onnxruntime", "openvino"]
"""What runs the encoder on the CPU (decoding always runs on ONNX Runtime)."""
Precision = Literal["fp32", "bf16", "int8"]
"""The encoder's compute precision on the OpenVINO backend (``int8``: int8 weights made at load)."""
DecoderWeights = Literal["auto", "fp32", "int8"]
"""The weights the decoding step reads (prediction network and joint): ``auto`` matches the encoder's."""


@dataclass(frozen=True)
class SessionOptions:
    """Encoder backend, precision and threading.

    The default suits a server: with batching on, one worker runs the graphs and may use every core;
    spinning is off so idle intra-op threads do not burn the cores that feature extraction and the
    request threads need.
    """

    threads: int | None = None
    """Intra-op threads for the encoder and for step graphs (predictor, joint) of 8 MB or more; smaller step
    graphs run on one thread (``None``: ONNX Runtime's default, one per physical core)."""
    spinning: bool = False
    """Let the encoder's idle intra-op threads spin, and a large predictor's (8 MB or more; its steps come back
    to back while decoding): lower latency for a single stream on otherwise idle cores, wasted CPU and slower
    decoding under load (benchmarks/README.md, "Decoding threads")."""
    release_memory_above_seconds: float | None = 30.0
    """After an encoder run on more audio than this (summed over the batch, padding included), ONNX
    Runtime hands the memory its arena grew for that run back to the system. Long inputs need gigabytes
    of activations at Parakeet size (attention is quadratic in length); without this, the arena keeps
    them for the life of the engine and later batches of other shapes grow it further. Runs on shorter
    audio keep the warm arena, so short requests pay nothing. ``None``: never release."""
    int8_weights: Int8Weights = "auto"
    """For int8 directories holding both ``uint8`` and ``int8`` weight graphs (``convert-model --quantize
    int8``'s default): ``auto`` loads the signed ``int8`` graph on CPUs with VNNI or AMX (exact and fastest
    there) and the ``uint8`` graph elsewhere (exact everywhere; ONNX Runtime's u8×s8 kernels saturate
    without VNNI); a scheme name forces that graph (``ManifestError`` at load if the directory lacks it)."""
    backend: Backend = "onnxruntime"
    """What runs the encoder: ``onnxruntime``, or ``openvino`` (the optional extra ``parakeet-runtime[openvino]``;
    it reads the same ``encoder.onnx``, fp32 directories only, on the CPU). The prediction network and the
    joint always run on ONNX Runtime."""
    precision: Precision = "fp32"
    """The OpenVINO encoder's inference precision: ``fp32``; ``bf16`` on CPUs with AVX-512 BF16 or AMX
    (elsewhere ``BackendUnavailableError`` at load); or ``int8``: the encoder's matrix products get int8 weights
    at load (one scale per output channel) and OpenVINO quantises their activations at run time in groups of 32,
    int8 products on CPUs with VNNI or AMX (measured in benchmarks/README.md; results close to fp32's, not
    equal). ONNX Runtime runs the graph's own precision: only ``fp32`` is accepted with it."""

    decoder_weights: DecoderWeights = "auto"
    """What the decoding step's matrix products read (prediction network and joint, once per emitted token: for
    Parakeet v3 about 42 MB of fp32 weights a step, so the step is bound by memory traffic). ``fp32``: the
    directory's graphs, NeMo's arithmetic (on the CPU, a joint as large as Parakeet v3's ranks its labels in int8
    and proves each choice is the fp32 argmax, deciding the rest in fp32: the same tokens; see
    :func:`~parakeet_runtime.engine.model.decoder_weights.checked_ranking_graph`). ``int8``: rewritten at load with
    8-bit weights in blocks of 32 and int8 products (a quarter of the traffic; ``model.decoder_weights``), not
    NeMo's arithmetic, so tokens can differ where two labels' scores nearly tie (agreement measured in
    benchmarks/README.md). ``auto``: ``int8`` where the encoder's own results already are not NeMo's (an int8
    directory, OpenVINO ``bf16`` or ``int8``), the graphs run on the CPU and it has int8 dot products (VNNI, AMX, or
    not x86: on AVX2-only x86 the int8 products can saturate); ``fp32`` otherwise, so the exact path stays exact."""

    def __post_init__(self) -> None:
        for name, allowed in (("int8_weights", Int8Weights), ("backend", Backend), ("precision", Precision),
                              ("decoder_weights", DecoderWeights)):
            check_choice(self, name, get_args(allowed))
        if self.backend == "onnxruntime" and self.precision != "fp32":
            raise OptionsError("SessionOptions", "precision", "'fp32' with backend='onnxruntime' (the others need "
                               "backend='openvino')", self.precision)
        check_integer(self, "threads", 1, optional=True)
        check_flag(self, "spinning")
        check_number(self, "release_memory_above_seconds", 0, optional=True, maximum=MAX_WINDOW_SECONDS,
                     unit="seconds")


Strategy = Literal["auto", "one_pass", "chunked"]
"""How a long input is transcribed: ``auto`` (one pass while it fits the memory budget, else chunks), or one
of the two forced."""


def default_memory_budget() -> int:
    """A quarter of this machine's physical memory, at most 8 GiB and at least 1 GiB (1 GiB when the size
    cannot be read)."""
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        total = 0
    return int(min(max(total // 4, 1 << 30), 8 << 30))


MAX_WINDOW_SECONDS = 86_400.0
"""Longest chunk or context :class:`LongFormOptions` takes (a day: anything longer is one pass in all but name, and
infinity cannot be counted in frames)."""


@dataclass(frozen=True)
class LongFormOptions:
    """How inputs of any length are transcribed.

    An input is encoded in one pass while the encoder's estimated memory for it fits ``memory_budget``
    bytes (and, for directories whose encoder has a length limit, while it is within it); a directory whose
    encoder has local attention needs memory in proportion to the length, so it goes much further in one
    pass. Longer inputs are transcribed with NeMo's buffered algorithm: windows of ``left_context_seconds``
    + ``chunk_seconds`` + ``right_context_seconds`` are encoded (a batch of windows at a time), only each
    chunk's frames are kept, and one continuous TDT search runs over them, carrying the decoder's state
    across chunk borders (no text is merged). ``Transcript.strategy`` says which ran.

    The chunk defaults were chosen from measurement (benchmarks/README.md, "Long recordings"): the
    contexts cost ``(left + right) / chunk`` more encoder work than one pass.
    """

    strategy: Strategy = "auto"
    """``auto``; ``one_pass`` (never chunk: fails where the encoder cannot take the length); ``chunked``."""
    memory_budget: int | None = None
    """Bytes a one-pass encoding may use (estimated from the length, the attention heads and kind); ``None``:
    :func:`default_memory_budget`."""
    chunk_seconds: float = 60.0
    """Audio per chunk (rounded down to whole encoder frames)."""
    left_context_seconds: float = 8.0
    """Audio before each chunk encoded with it (rounded down to whole encoder frames)."""
    right_context_seconds: float = 4.0
    """Audio after each chunk encoded with it (rounded down to whole encoder frames)."""
    max_audio_seconds: float | None = None
    """Longest input accepted (``AudioTooLongError`` beyond, checked from the declared length before
    decoding); ``None``: no limit."""

    def __post_init__(self) -> None:
        check_choice(self, "strategy", get_args(Strategy))
        check_integer(self, "memory_budget", 1, optional=True)
        check_number(self, "chunk_seconds", 0, above=True, maximum=MAX_WINDOW_SECONDS, unit="seconds")
        check_number(self, "left_context_seconds", 0, maximum=MAX_WINDOW_SECONDS, unit="seconds")
        check_number(self, "right_context_seconds", 0, maximum=MAX_WINDOW_SECONDS, unit="seconds")
        check_number(self, "max_audio_seconds", 0, above=True, optional=True, unit="seconds")

    @property
    def budget(self) -> int:
        """The memory budget in bytes (the default resolved)."""
        return self.memory_budget if self.memory_budget is not None else default_memory_budget()
