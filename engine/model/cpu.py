"""What this CPU's integer and bfloat16 kernels can do, where it changes a model's results or speed."""

from __future__ import annotations

import functools
import platform
from pathlib import Path

_X86 = ("x86_64", "amd64", "i386", "i686")
_DOT_PRODUCT_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})
_BF16_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


@functools.cache
def cpuinfo_text() -> str | None:
    """``/proc/cpuinfo`` (``None`` where it cannot be read: not Linux)."""
    try:
        return Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None


def cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The first ``flags`` line of an x86 ``/proc/cpuinfo`` (empty: no such line)."""
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return frozenset(line.partition(":")[2].split())
    return frozenset()


def cpu_name(cpuinfo: str | None = None) -> str:
    """The ``model name`` of the first CPU in ``cpuinfo`` (default: this machine's), else the platform's name."""
    text = cpuinfo_text() if cpuinfo is None else cpuinfo
    for line in (text or "").splitlines():
        if line.startswith("model name"):
            return line.partition(":")[2].strip()
    return platform.processor() or platform.machine()


def isa_summary(cpuinfo: str | None = None) -> str:
    """The instruction-set extensions that decide this project's kernels, e.g. ``avx2 avx512f avx512_vnni``."""
    text = cpuinfo_text() if cpuinfo is None else cpuinfo
    flags = cpu_flags(text or "")
    wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    return " ".join(flag for flag in wanted if flag in flags) or "unknown"


@functools.cache
def x86_without_int8_dot_products() -> bool:
    """True on an x86 CPU known to lack VNNI and AMX: ONNX Runtime's u8×s8 kernels there add pairs of
    products in saturating 16-bit lanes. False elsewhere, and when the CPU's flags cannot be read."""
    if platform.machine().lower() not in _X86:
        return False
    text = cpuinfo_text()
    return text is not None and lacks_int8_dot_products(text)


def lacks_int8_dot_products(cpuinfo: str) -> bool:
    """Whether the first ``flags`` line of an x86 ``/proc/cpuinfo`` lacks VNNI and AMX (False: no such line)."""
    flags = cpu_flags(cpuinfo)
    return bool(flags) and not (_DOT_PRODUCT_FLAGS & flags)


def preferred_int8_weights(cpuinfo: str | None, machine: str) -> str:
    """``int8`` (signed weights: exact and fastest) where the CPU has int8 dot products, ``uint8`` (exact
    everywhere, slower) where it may not.

    Args:
        cpuinfo: the text of ``/proc/cpuinfo`` (``None``: not readable).
        machine: ``platform.machine()``.

    On x86, ``int8`` needs VNNI (AVX-512 or AVX) or AMX in the flags; unreadable flags count as lacking
    them. Elsewhere (ARM: ``sdot``, or ONNX Runtime's widening kernels) signed weights do not saturate.
    """
    if machine.lower() not in _X86:
        return "int8"
    if cpuinfo is None:
        return "uint8"
    return "int8" if _DOT_PRODUCT_FLAGS & cpu_flags(cpuinfo) else "uint8"


def int8_weights_for_this_cpu() -> str:
    """:func:`preferred_int8_weights` for this machine."""
    return preferred_int8_weights(cpuinfo_text(), platform.machine())


def has_bf16(cpuinfo: str | None, machine: str) -> bool:
    """Whether the CPU computes in bfloat16 natively: AVX-512 BF16 or AMX (x86 only; False when unknown)."""
    if machine.lower() not in _X86 or cpuinfo is None:
        return False
    return bool(_BF16_FLAGS & cpu_flags(cpuinfo))


def this_cpu_has_bf16() -> bool:
    """:func:`has_bf16` for this machine."""
    return has_bf16(cpuinfo_text(), platform.machine())
