"""What the benchmarks write: their JSON results, and their tables in benchmarks/README.md (each benchmark owns the
block between its two markers); and the results their worker processes print."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def write_json(path: Path, report: Any) -> None:
    """Write ``report`` to ``path`` as indented JSON (its folder made if missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


def write_block(readme: Path, name: str, lines: list[str], heading: str) -> None:
    """Replace the lines between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` in ``readme`` (or append
    them under a new ``## heading`` when the markers are not there yet)."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    block = "\n".join([start, *lines, end])
    text = readme.read_text(encoding="utf-8") if readme.is_file() else "# Benchmarks\n"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        text = head + block + rest.split(end, 1)[1]
    else:
        text = text.rstrip() + f"\n\n## {heading}\n\n" + block + "\n"
    readme.write_text(text, encoding="utf-8")


def measured_on(meta: dict[str, Any]) -> str:
    """The first words of a table's caption: when and on which CPU (``meta["machine"]``, from
    ``concurrency.machine()``) a benchmark ran."""
    cpu = meta["machine"]
    return f"Measured {meta['date']} on {cpu['cpu']}, {cpu['cores']} cores ({cpu['simd']})"


def worker_result(command: list[str], failure: str) -> dict[str, Any]:
    """Run a worker process (a benchmark script calling itself) and return the JSON of the last line it prints as
    ``RESULT {...}``; its stderr's tail and ``failure`` end the benchmark when it fails."""
    proc = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stderr[-3000:])
        raise SystemExit(failure)
    result: dict[str, Any] = json.loads(lines[-1][len("RESULT "):])
    return result

