"""benchmarks/soak.py on a short run: it starts the server, answers every request, samples RSS, writes its report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from parakeet_runtime.engine import default_model_dir, load_manifest
from tests.conftest import REPO


def test_short_soak_writes_a_complete_report(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n\nother sections stay as they are\n")
    proc = subprocess.run(
        [sys.executable, REPO / "benchmarks" / "soak.py", "--requests", "200", "--sample-every", "50", "--clients",
         "3", "--warmup-rounds", "1", "--time-limit", "120", "--out", out, "--readme", readme],
        capture_output=True, text=True, timeout=120, cwd=REPO,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    report = json.loads(out.read_text())
    assert report["requests"] == report["answered"] == report["ok"] == 200
    assert report["errors"] == 0 and report["mismatches"] == 0 and not report["stopped_by_time_limit"]
    assert report["clients"] == 3 and report["sample_every"] == 50
    assert report["warmup"] == {"rounds": 1, "requests": 3, "ok": 3}
    assert [s["requests"] for s in report["rss"]] == [0, 50, 100, 150, 200]
    assert all(s["rss_mb"] > 10 for s in report["rss"])
    assert [s["elapsed_s"] for s in report["rss"]] == sorted(s["elapsed_s"] for s in report["rss"])
    assert min(c["seconds"] for c in report["clips"]) >= 1.0 and max(c["seconds"] for c in report["clips"]) <= 3.0
    assert all(c["text"] for c in report["clips"])
    verdict = report["verdict"]
    assert verdict["baseline_mb"] == report["rss"][1]["rss_mb"]
    assert verdict["peak_after_mb"] == max(s["rss_mb"] for s in report["rss"][2:])
    assert isinstance(verdict["pass"], bool) and verdict["pass"] == (verdict["growth_pct"] <= 5.0)
    assert report["machine"]["cpu"] and report["model"] == load_manifest(default_model_dir()).model_name
    text = readme.read_text()
    assert text.startswith("# Benchmarks\n\nother sections stay as they are\n\n## Soak\n")
    assert "| 200 |" in text and proc.stdout.strip().splitlines()[-1].startswith("| 200 |")
