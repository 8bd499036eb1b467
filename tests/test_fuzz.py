"""Fuzzing (issue #19): hostile arrays, mutated audio files and mutated model directories.

Property-based and derandomized (the same cases on every run, no example database), with a bounded number of
cases each and a time check per case. What may come out of the engine is a valid result or a typed error
(:class:`ParakeetRuntimeError`), never another exception. Outcomes are counted in :data:`COUNTS`; the last test
of the file prints them (``-s``) and checks that the engine used throughout still transcribes the sample as
it did before the fuzzing.
"""

from __future__ import annotations

import io
import math
import random
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import soundfile
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parakeet_runtime.engine import Engine, ManifestError, ParakeetRuntimeError, default_model_dir, sample_audio_path
from parakeet_runtime.engine.results import Transcript

CASE_LIMIT_S = 5.0
"""No single case may take longer (the demo model transcribes the longest generated input in well under 1 s)."""
MAX_ELEMENTS = 48_000
"""Largest generated array (3 s at the model's 16 kHz; 48 s at 1 kHz)."""

COUNTS: dict[str, Counter[str]] = {"arrays": Counter(), "audio files": Counter(), "model files": Counter()}
SLOWEST: dict[str, float] = {}
STARTED = time.monotonic()

FUZZ = settings(derandomize=True, database=None, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load() as loaded:
        yield loaded


@pytest.fixture(scope="module")
def baseline(engine: Engine) -> Transcript:
    """The sample's transcript before any fuzzing."""
    return engine.transcribe(sample_audio_path())


def _outcome(kind: str, call: Callable[[], object]) -> None:
    """Run one case: a result of the right type or a typed error, within :data:`CASE_LIMIT_S`."""
    started = time.monotonic()
    try:
        result = call()
    except ParakeetRuntimeError as exc:
        COUNTS[kind][type(exc).__name__] += 1
    else:
        assert isinstance(result, Transcript), type(result)
        COUNTS[kind]["ok"] += 1
    elapsed = time.monotonic() - started
    SLOWEST[kind] = max(SLOWEST.get(kind, 0.0), elapsed)
    assert elapsed < CASE_LIMIT_S, f"one {kind} case took {elapsed:.1f} s"


# --- arrays -----------------------------------------------------------------------------------------------

DTYPES = ["float32", "float64", "float16", "longdouble", ">f4", "int8", "int16", ">i2", "int32", "int64", "uint8",
          "uint16", "uint64", "bool", "complex64", "complex128", "object", "datetime64[s]", "<U4", "V8"]
AXES = [0, 1, 2, 3, 8, 9, 100, 1000, 16000, 40000]
SPECIALS = [math.nan, math.inf, -math.inf, 1e30, -1e30, 1e6 + 1, 1.0, -1.0, 0.5, 0.0]
RATES: list[Any] = [0, -1, -16000, 1, 999, 1000, 8000, 16000, 22050, 44100, 384000, 384001, 10**9, 2**62,
                    10**30, 16000.0, 16000.5, True, False, np.int32(16000), np.int64(8000), np.float64(8000.0),
                    math.nan, math.inf, "16000", None]


def _shape(axes: list[int]) -> tuple[int, ...]:
    return tuple(axes)


@st.composite
def hostile_arrays(draw: st.DrawFn) -> npt.NDArray[Any]:
    """An array of a hostile dtype, shape, content and memory layout."""
    array = draw(_hostile_values())
    layout = draw(st.sampled_from(["contiguous", "fortran", "reversed", "read-only"]))
    if layout == "fortran":
        return np.asfortranarray(array)
    if layout == "reversed":
        return array[(slice(None, None, -1),) * array.ndim]
    if layout == "read-only":
        array.flags.writeable = False
    return array


@st.composite
def _hostile_values(draw: st.DrawFn) -> npt.NDArray[Any]:
    shape = draw(st.lists(st.sampled_from(AXES), min_size=0, max_size=3).map(_shape)
                 .filter(lambda s: math.prod(s) <= MAX_ELEMENTS))
    dtype: np.dtype[Any] = np.dtype(draw(st.sampled_from(DTYPES)))
    fill = draw(st.sampled_from(["zeros", "noise", "special", "noise+special"]))
    scale = draw(st.sampled_from([1e-4, 0.1, 1.0, 1e3, 1e7]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = np.zeros(shape) if fill == "zeros" else rng.normal(0.0, scale, size=shape)
    if fill == "special":
        values = np.full(shape, draw(st.sampled_from(SPECIALS)))
    elif fill == "noise+special" and values.size:
        values.flat[int(rng.integers(values.size))] = draw(st.sampled_from(SPECIALS))
    if dtype.kind in "iu":
        info = np.iinfo(dtype)
        native = dtype.newbyteorder("=")
        integers = rng.integers(info.min, info.max, size=shape, dtype=native, endpoint=True) \
            if fill != "zeros" else np.zeros(shape, dtype=native)
        return integers.astype(dtype)
    if dtype.kind == "b":
        return values > 0
    if dtype.kind == "c":
        return (values + 1j * values).astype(dtype)
    if dtype.kind in "MUV":
        return np.zeros(shape, dtype=dtype)
    if dtype.kind == "O":
        array = np.empty(shape, dtype=object)
        array.flat[:] = [draw(st.sampled_from([0.0, "0.5", None, b"\x00"]))] * array.size
        return array
    with np.errstate(over="ignore", invalid="ignore"):
        return values.astype(dtype)


@settings(FUZZ, max_examples=150)
@given(array=hostile_arrays(), rate=st.sampled_from(RATES), how=st.sampled_from(["bare", "keyword", "pair"]))
def test_hostile_arrays_give_a_transcript_or_a_typed_error(engine: Engine, array: npt.NDArray[Any], rate: Any,
                                                          how: str) -> None:
    if how == "bare":
        _outcome("arrays", lambda: engine.transcribe(array))
    elif how == "keyword":
        _outcome("arrays", lambda: engine.transcribe(array, sample_rate=rate))
    else:
        _outcome("arrays", lambda: engine.transcribe((array, rate)))


# --- byte mutation ----------------------------------------------------------------------------------------

BOUNDARY_WORDS = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80", b"\x01\x00"]


def mutate(data: bytes, seed: int, count: int, *, keep_size: bool = False) -> bytes:
    """``data`` with ``count`` seeded edits: bit flips, truncation, inserted or deleted runs, boundary words
    written over it (only flips and overwrites with ``keep_size``, which get past a recorded file size); half
    of the positions fall in the first 256 bytes, where headers are."""
    rng = random.Random(seed)
    buffer = bytearray(data)
    for _ in range(count):
        if not buffer:
            buffer += rng.randbytes(rng.randint(1, 16))
            continue
        near_start = rng.random() < 0.5
        position = rng.randrange(min(len(buffer), 256)) if near_start else rng.randrange(len(buffer))
        edit = rng.choice(["flip", "boundary"] if keep_size else ["flip", "flip", "truncate", "insert", "delete",
                                                                 "boundary"])
        if edit == "flip":
            buffer[position] ^= 1 << rng.randrange(8)
        elif edit == "truncate":
            del buffer[position:]
        elif edit == "insert":
            buffer[position:position] = rng.randbytes(rng.randint(1, 16))
        elif edit == "delete":
            del buffer[position:position + rng.randint(1, 16)]
        else:
            word = rng.choice(BOUNDARY_WORDS)[:len(buffer) - position]
            buffer[position:position + len(word)] = word
    return bytes(buffer)


def test_mutation_is_seeded_and_changes_the_data() -> None:
    data = bytes(range(256)) * 4
    assert mutate(data, 7, 3) == mutate(data, 7, 3)
    assert all(mutate(data, seed, 1) != data for seed in range(50))
    assert all(len(mutate(data, seed, 8, keep_size=True)) == len(data) for seed in range(50))


@pytest.fixture(scope="module")
def sample_files() -> dict[str, bytes]:
    """The bundled sample as 16-bit WAV and as FLAC."""
    samples, rate = soundfile.read(str(sample_audio_path()), dtype="int16")
    files = {}
    for fmt in ("WAV", "FLAC"):
        buffer = io.BytesIO()
        soundfile.write(buffer, samples, rate, format=fmt, subtype="PCM_16")
        files[fmt] = buffer.getvalue()
    return files


@settings(FUZZ, max_examples=150)
@given(fmt=st.sampled_from(["WAV", "FLAC"]), seed=st.integers(0, 2**32 - 1), count=st.integers(1, 8))
def test_mutated_audio_files_give_a_transcript_or_a_typed_error(engine: Engine, sample_files: dict[str, bytes],
                                                                fmt: str, seed: int, count: int) -> None:
    data = mutate(sample_files[fmt], seed, count)
    _outcome("audio files", lambda: engine.transcribe(data))


MODEL_FILES = sorted(path.name for path in default_model_dir().iterdir() if path.is_file())


def test_the_model_files_are_all_fuzzed() -> None:
    assert {"manifest.json", "features.npz", "tokenizer.model", "vocab.txt"} <= set(MODEL_FILES)
    assert {"encoder.onnx", "predictor.onnx", "joint.onnx"} <= set(MODEL_FILES)


@pytest.fixture(scope="module")
def scratch_model() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="fuzz-") as scratch:
        model = Path(scratch) / "model"
        shutil.copytree(default_model_dir(), model)
        yield model


def _load_and_transcribe(model: Path) -> Transcript:
    with Engine.load(model) as loaded:
        return loaded.transcribe(sample_audio_path())


@settings(FUZZ, max_examples=120)
@given(name=st.sampled_from(MODEL_FILES), seed=st.integers(0, 2**32 - 1), count=st.integers(1, 6),
       keep_size=st.booleans())
def test_mutated_model_files_load_or_give_a_typed_error(scratch_model: Path, name: str, seed: int, count: int,
                                                        keep_size: bool) -> None:
    path = scratch_model / name
    original = (default_model_dir() / name).read_bytes()
    path.write_bytes(mutate(original, seed, count, keep_size=keep_size))
    try:
        _outcome("model files", lambda: _load_and_transcribe(scratch_model))
    finally:
        path.write_bytes(original)
    COUNTS["model files"][f"file:{name}"] += 1


def test_a_tokenizer_piece_that_is_not_utf8_is_a_manifest_error(scratch_model: Path) -> None:
    """Found by the fuzz: a piece that is not UTF-8 raised a raw UnicodeDecodeError from Tokenizer.load."""
    original = (default_model_dir() / "tokenizer.model").read_bytes()
    broken = bytearray(original)
    broken[186] ^= 0x40  # 0x81 -> 0xc1 inside a piece's UTF-8 bytes: same size, still a valid protobuf
    (scratch_model / "tokenizer.model").write_bytes(bytes(broken))
    try:
        with pytest.raises(ManifestError, match=r"tokenizer\.model"):
            Engine.load(scratch_model)
    finally:
        (scratch_model / "tokenizer.model").write_bytes(original)


def test_the_engine_is_unharmed_and_the_cases_were_counted(engine: Engine, baseline: Transcript) -> None:
    """Runs last (file order): every property ran its cases, each saw both refusals and results, and the
    engine used throughout still gives the sample's transcript it gave before."""
    after = engine.transcribe(sample_audio_path())
    assert after == baseline
    summary = {kind: dict(sorted(counts.items())) for kind, counts in COUNTS.items()}
    print(f"\nfuzz outcomes: {summary}\nslowest case per kind (s): "
          f"{ {kind: round(s, 3) for kind, s in SLOWEST.items()} }; "
          f"{time.monotonic() - STARTED:.1f} s since the module was imported")
    for kind, counts in COUNTS.items():
        outcomes = sum(n for key, n in counts.items() if not key.startswith("file:"))
        assert outcomes >= 60, (kind, counts)
        assert counts["ok"] > 0 and outcomes - counts["ok"] > 0, (kind, counts)
    assert {f"file:{name}" for name in MODEL_FILES} <= set(COUNTS["model files"]), COUNTS["model files"]
