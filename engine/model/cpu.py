"""What this CPU's integer kernels can do, where it changes an int8 model's results."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

_X86 = ("x86_64", "amd64", "i386", "i686")
_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


@functools.cache
def x86_without_int8_dot_products() -> bool:
    """True on an x86 CPU known to lack VNNI and AMX: ONNX Runtime's u8×s8 kernels there add pairs of
    products in saturating 16-bit lanes. False elsewhere, and when the CPU's flags cannot be read."""
    if platform.machine().lower() not in _X86:
        return False
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return lacks_int8_dot_products(text)


def lacks_int8_dot_products(cpuinfo: str) -> bool:
    """Whether the first ``flags`` line of an x86 ``/proc/cpuinfo`` lacks VNNI and AMX (False: no such line)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return not (_DOT_PRODUCT_FLAGS & set(line.partition(":")[2].split()))
    return False
