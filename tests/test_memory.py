"""``serve`` caps glibc's malloc arenas (a step in RSS per new request thread otherwise)."""

from __future__ import annotations

import platform
import subprocess
import sys

import numpy as np
import pytest

from parakeet_runtime.engine.memory import limit_malloc_arenas

PROBE = "from parakeet_runtime.engine.memory import limit_malloc_arenas; print(limit_malloc_arenas())"


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc")
def test_arenas_are_capped_on_glibc_unless_the_environment_decides() -> None:
    env = {"PATH": "/usr/bin:/bin"}
    capped = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, check=True)
    assert capped.stdout.strip() == "True"
    chosen = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True,
                            env={**env, "MALLOC_ARENA_MAX": "4"})
    assert chosen.stdout.strip() == "False"


def test_arena_count_must_be_positive() -> None:
    with pytest.raises(ValueError, match="arenas"):
        limit_malloc_arenas(0)


def test_load_hands_its_freed_buffers_back(monkeypatch: pytest.MonkeyPatch) -> None:
    """``Engine.load`` trims the malloc heaps once, after its graphs are open (what loading read and rewrote is
    freed by then), and the engine serves after it."""
    from parakeet_runtime.engine import Engine, sample_audio_path
    from parakeet_runtime.engine import engine as engine_module

    calls: list[int] = []

    def trim() -> bool:
        calls.append(1)
        return True

    monkeypatch.setattr(engine_module, "release_free_memory", trim)
    engine = Engine.load()
    try:
        assert calls == [1]
        assert engine.transcribe(sample_audio_path()).text
    finally:
        engine.close()


def test_a_session_on_graph_bytes_does_not_keep_them() -> None:
    """ONNX Runtime's Python session holds the bytes it was opened from for its whole life; the engine's sessions
    on graphs made at load let them go (Parakeet v3's step graph is 126 MB), and still run."""
    from parakeet_runtime.engine import default_model_dir
    from parakeet_runtime.engine.model.manifest import load_manifest
    from parakeet_runtime.engine.model.onnx_model import graph_session

    directory = default_model_dir()
    joint = load_manifest(directory).joint
    graph = (directory / joint.file).read_bytes()
    held = sys.getrefcount(graph)
    session = graph_session(graph, ["CPUExecutionProvider"], 1, "no", name=joint.file)
    assert sys.getrefcount(graph) == held
    feeds = {i.name: np.zeros([1 if not isinstance(d, int) else d for d in i.shape], np.float32)
             for i in session.get_inputs()}
    assert session.run(None, feeds)[0].size > 0
