"""What the benchmarks write: their JSON results, and their tables in benchmarks/README.md (each benchmark owns the
block between its two markers)."""

from __future__ import annotations

import json
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
