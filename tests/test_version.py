"""``__version__`` of the three packages and ``--version`` on both command lines: the installed distribution's."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from importlib.metadata import version

import pytest

INSTALLED = version("parakeet-runtime")


def test_packages_carry_the_distribution_version() -> None:
    import parakeet_runtime.decoding
    import parakeet_runtime.engine
    import parakeet_runtime.export

    assert INSTALLED
    assert parakeet_runtime.engine.__version__ == INSTALLED
    assert parakeet_runtime.export.__version__ == INSTALLED
    assert parakeet_runtime.decoding.__version__ == INSTALLED


def test_version_fallback_when_not_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.metadata

    import parakeet_runtime.decoding
    import parakeet_runtime.engine

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert parakeet_runtime.engine._package_version() == "0+unknown"
    assert parakeet_runtime.decoding._package_version() == "0+unknown"


@pytest.mark.parametrize(("module", "prog"), [("parakeet_runtime.engine.serving.cli", "parakeet-runtime"),
                                               ("parakeet_runtime.export.cli", "convert-model")])
def test_version_flag(module: str, prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    import importlib

    cli = importlib.import_module(module)
    with pytest.raises(SystemExit) as exited:
        cli.parse_args(["--version"])
    assert exited.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{prog} ") and out.rstrip().endswith(INSTALLED)


@pytest.mark.parametrize("script", ["parakeet-runtime", "convert-model"])
def test_installed_scripts_print_their_version(script: str) -> None:
    exe = shutil.which(script, path=os.path.dirname(sys.executable))
    assert exe, f"{script} is not installed beside {sys.executable}"
    proc = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.rstrip().endswith(INSTALLED) and proc.stdout.startswith(script)
