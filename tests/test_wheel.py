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


def test_sdist_and_wheel_build_without_warnings_and_carry_what_they_should(tmp_path: Path) -> None:
    """setuptools warned that engine/data and engine/default_model (data directories under a package) "would be
    ignored" as packages absent from the configuration; and the sdist carried tests/test_*.py (setuptools'
    default) without the conftest, helpers and fixture builder they import. Now: no such warning; the wheel (built
    from the sdist, as ``python -m build`` does) carries the data; the sdist carries no tests."""
    import tarfile
    import zipfile

    dist = tmp_path / "dist"
    # --no-isolation: this venv's setuptools (pyproject.toml needs >= 77), nothing downloaded
    built = _run([sys.executable, "-m", "build", "--no-isolation", "-o", dist, REPO], cwd=tmp_path)
    log = built.stdout + built.stderr
    assert "absent from the `packages` configuration" not in log and "would be ignored" not in log, log[-3000:]
    (sdist,) = dist.glob("parakeet_runtime-*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    assert "pyproject.toml" in members and "engine/default_model/encoder.onnx" in members
    assert not [name for name in members if name.startswith("tests/")]
    (wheel,) = dist.glob("parakeet_runtime-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
    data = {"engine/data/sample.wav", "engine/data/sample.txt", "engine/default_model/manifest.json",
            "engine/default_model/encoder.onnx", "engine/default_model/tokenizer.model", "engine/py.typed"}
    assert {f"parakeet_runtime/{name}" for name in data} <= names
    assert {name.split("/")[0] for name in names} == {"parakeet_runtime", f"{wheel.name.split('-')[0]}-"
                                                      f"{wheel.name.split('-')[1]}.dist-info"}
