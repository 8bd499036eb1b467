"""The inference path imports neither torch, NeMo nor Ray, and the package installs under one namespace."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.conftest import REPO

PROBE = textwrap.dedent(
    """
    import sys
    from parakeet_runtime.engine import Engine, sample_audio_path
    from parakeet_runtime.engine.serving.cli import main
    from parakeet_runtime.engine.serving.server import create_app
    engine = Engine.load()
    result = engine.transcribe(sample_audio_path())
    assert result.text, "empty transcript"
    heavy = sorted(m for m in sys.modules if m.split(".")[0] in {"torch", "nemo", "onnx", "lightning",
                                                                  "pytorch_lightning", "omegaconf", "tensorrt",
                                                                  "ray", "pyarrow"})
    print("HEAVY=" + ",".join(heavy))
    """
)


def test_inference_path_imports_no_torch_nemo_or_ray() -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert "HEAVY=\n" in proc.stdout, proc.stdout


def test_no_generic_top_level_packages() -> None:
    """Only ``parakeet_runtime`` is importable from the install, never a bare ``engine`` or ``export``."""
    code = "import importlib.util as u; print([n for n in ('engine', 'export', 'decoding') if u.find_spec(n)])"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd="/")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert (REPO / "engine" / "__init__.py").is_file()
