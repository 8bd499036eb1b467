"""A wheel built from the repo installs into a fresh venv and works from outside the repo."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import pytest

from parakeet_runtime.engine import Engine, sample_audio_path
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def _run(args: list[str | Path], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(a) for a in args], cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}: {proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    return proc


def test_wheel_installs_and_transcribes_outside_the_repo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", dist, REPO], cwd=tmp_path)
    wheels = list(dist.glob("parakeet_runtime-*.whl"))
    assert len(wheels) == 1

    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    _run([python, "-m", "pip", "install", "-q", wheels[0]], cwd=tmp_path)

    site = Path(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     cwd=tmp_path).stdout.strip())
    ours = sorted(p.name for p in site.iterdir() if p.name.startswith("parakeet"))
    assert ours[0] == "parakeet_runtime" and ours[1].startswith("parakeet_runtime-")
    for generic in ("engine", "export", "decoding", "tests"):
        assert not (site / generic).exists(), f"{generic} landed in site-packages"
    assert not (site / "parakeet_runtime" / "__init__.py").exists()  # a namespace, as in the repo

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    text = _run([env_dir / "bin" / "parakeet-runtime", "transcribe"], cwd=outside).stdout
    assert text == Engine.load().transcribe(sample_audio_path()).text + "\n"
    # The README's first command prints the sample clip's exact words (the bundled demo model).
    assert text == sample_audio_path().with_name("sample.txt").read_text(encoding="utf-8")
    listed = _run([python, "-m", "pip", "list", "--format=freeze"], cwd=outside).stdout.lower()
    assert "torch" not in listed and "nemo" not in listed
    help_text = _run([env_dir / "bin" / "convert-model", "--help"], cwd=outside).stdout
    assert "convert-model" in help_text
