"""Shared fixtures: fixture models and clips (built by tests/fixtures/build.py), their conversions,
and NeMo's own transcriptions of them (the reference every parity test compares against)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
FIXTURE_DIR = Path(os.environ.get("PARAKEET_FIXTURE_DIR", REPO / ".fixtures"))


def _have_nemo() -> bool:
    try:
        import nemo.collections.asr  # noqa: F401
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


HAVE_NEMO = _have_nemo()


def pytest_configure(config: pytest.Config) -> None:
    """A test run started as a background job of a script without job control (``tests/run.sh &``) inherits
    Ctrl-C ignored, and so does every CLI the tests start and then interrupt (Python leaves an ignored SIGINT
    ignored): the tests that send Ctrl-C need it delivered, so it gets Python's own handler back here."""
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    has_gpu = False
    try:
        import onnxruntime

        has_gpu = "CUDAExecutionProvider" in onnxruntime.get_available_providers()
    except ImportError:
        pass
    for item in items:
        if "gpu" in item.keywords and not has_gpu:
            item.add_marker(skip_gpu)


def _source_hash() -> str:
    """Hash of the code that decides what ``convert`` writes: the exporter, the manifest schema and the
    fixture builder. Engine and decoding changes do not re-convert the fixtures (the parity tests run the
    engine on them anyway)."""
    digest = hashlib.sha256()
    paths = [REPO / "engine" / "model" / "manifest.py"]
    for folder in ("export", "tests/fixtures"):
        paths += sorted((REPO / folder).rglob("*.py"))
    for path in paths:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


@pytest.fixture(scope="session")
def fixture_index() -> dict[str, Any]:
    """Fixture models and clips, built once per machine (rebuilt when the builder's VERSION changes)."""
    from tests.fixtures import build

    index_path = FIXTURE_DIR / "models" / "index.json"
    if index_path.is_file():
        index: dict[str, Any] = json.loads(index_path.read_text())
        if index.get("version") == build.VERSION and all(Path(p).is_file() for p in index["models"].values()):
            return index
    if not HAVE_NEMO:
        pytest.skip("fixture models need NeMo and torch (pip install -e '.[export,dev]')")
    shutil.rmtree(FIXTURE_DIR / "models", ignore_errors=True)
    return build.build(FIXTURE_DIR / "models")


@pytest.fixture(scope="session")
def clips(fixture_index: dict[str, Any]) -> dict[str, Path]:
    return {c["name"]: Path(c["path"]) for c in fixture_index["clips"]}


@pytest.fixture(scope="session")
def nemo_paths(fixture_index: dict[str, Any]) -> dict[str, Path]:
    return {name: Path(p) for name, p in fixture_index["models"].items()}


@pytest.fixture(scope="session")
def converted(nemo_paths: dict[str, Path]) -> dict[str, Path]:
    """Every fixture model converted with convert-model (cached by the hash of the source code)."""
    from parakeet_runtime.export.convert import convert

    root = FIXTURE_DIR / f"converted-{_source_hash()}"
    for stale in FIXTURE_DIR.glob("converted-*"):
        if stale != root:
            shutil.rmtree(stale, ignore_errors=True)
    out = {}
    for name, path in nemo_paths.items():
        target = root / name
        if not (target / "manifest.json").is_file():
            convert(str(path), target, overwrite=True)
        out[name] = target
    return out


@cache
def load_nemo(path: str) -> Any:
    from nemo.collections.asr.models import ASRModel

    model = ASRModel.restore_from(path, map_location="cpu")
    model.eval()
    return model


@cache
def nemo_transcripts(path: str, clip_paths: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """NeMo ``transcribe(timestamps=True)`` on each clip, one clip per batch, as plain data."""
    model = load_nemo(path)
    hyps = model.transcribe(list(clip_paths), batch_size=1, timestamps=True, return_hypotheses=True, verbose=False)
    model.eval()
    out = {}
    for clip, hyp in zip(clip_paths, hyps, strict=True):
        ts = hyp.timestamp
        out[clip] = {
            "ids": [int(t) for t in hyp.y_sequence],
            "frames": [int(t) for t in ts["timestep"]],
            "durations": [int(d) for d in hyp.token_duration],
            "text": hyp.text,
            "chars": [(c["char"][0], c["start_offset"], c["end_offset"], c["start"], c["end"]) for c in ts["char"]],
            "words": [(w["word"], w["start_offset"], w["end_offset"], w["start"], w["end"]) for w in ts["word"]],
            "segments": [
                (s["segment"], s["start_offset"], s["end_offset"], s["start"], s["end"]) for s in ts["segment"]
            ],
        }
    return out


@pytest.fixture(scope="session")
def reference(nemo_paths: dict[str, Path], clips: dict[str, Path]) -> Iterator[Any]:
    """``reference(model_name)`` -> {clip path: NeMo result}."""

    def get(name: str) -> dict[str, dict[str, Any]]:
        return nemo_transcripts(str(nemo_paths[name]), tuple(str(p) for p in clips.values()))

    yield get


@pytest.fixture(scope="session")
def engines(converted: dict[str, Path]) -> dict[str, Any]:
    from parakeet_runtime.engine import Engine

    return {name: Engine.load(path) for name, path in converted.items()}


@pytest.fixture(scope="session")
def sample_samples() -> Any:
    """The bundled sample clip's samples (16 kHz mono float32), read once: tests that build files from speech."""
    import numpy as np
    import soundfile

    from parakeet_runtime.engine import sample_audio_path

    samples, rate = soundfile.read(sample_audio_path(), dtype="float32")
    assert rate == 16000 and samples.ndim == 1
    return np.asarray(samples)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """The fuzz suite's case counts and time (tests/test_fuzz.py), shown without ``-s``."""
    import sys
    import time

    fuzz = sys.modules.get("tests.test_fuzz")
    counts = getattr(fuzz, "COUNTS", None)
    if not counts:
        return
    terminalreporter.write_sep("-", "fuzz suite")
    for kind, outcomes in counts.items():
        cases = sum(n for name, n in outcomes.items() if not name.startswith("file:"))
        terminalreporter.write_line(f"{kind}: {cases} cases, {dict(sorted(outcomes.items()))}")
    slowest = getattr(fuzz, "SLOWEST", {})
    started = getattr(fuzz, "STARTED", None)
    elapsed = f", {time.monotonic() - started:.1f} s since the fuzz module was imported" if started else ""
    terminalreporter.write_line(f"slowest case per kind (s): {({k: round(v, 3) for k, v in slowest.items()})}{elapsed}")


def wav_declaring(wav: bytes, size: int) -> bytes:
    """``wav`` (libsndfile's: one ``data`` chunk) with its data chunk declaring ``size`` bytes."""
    data = wav.index(b"data")
    return wav[: data + 4] + size.to_bytes(4, "little") + wav[data + 8 :]
