"""``serve`` caps glibc's malloc arenas (a step in RSS per new request thread otherwise)."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

from parakeet_runtime.engine.serving.memory import limit_malloc_arenas

PROBE = "from parakeet_runtime.engine.serving.memory import limit_malloc_arenas; print(limit_malloc_arenas())"


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
