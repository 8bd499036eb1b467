"""Smoke runs of the benchmark scripts on tiny models, so that they do not rot (no timing assertions)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import HAVE_NEMO, REPO

pytestmark = [pytest.mark.slow, pytest.mark.nemo, pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo")]
BENCH = REPO / "benchmarks"


def _run(args: list[str | Path], timeout: int = 900) -> str:
    proc = subprocess.run([sys.executable, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc.stdout


def test_rtfx_on_a_tiny_parakeet_shaped_model(tmp_path: Path) -> None:
    _run([BENCH / "parakeet_models.py", "--out", tmp_path / "models", "--shapes", "tiny",
          "--int8-weights", "uint8", "int7"])
    shape = tmp_path / "models" / "tiny"
    # The default scheme (``auto``) writes ``int8``; each other scheme asked for, ``int8-<scheme>``.
    for directory, weights in (("int8-uint8", "uint8"), ("int8-int7", "int7")):
        manifest = json.loads((shape / directory / "manifest.json").read_text())
        assert manifest["encoder"]["precision"] == "int8"
        assert manifest["provenance"]["quantization"]["weights"] == weights
    readme = tmp_path / "README.md"
    shutil.copy(BENCH / "README.md", readme)
    _run([BENCH / "rtfx.py", "--nemo", shape / "model.nemo", "--fp32", shape / "fp32", "--int8", shape / "int8-uint8",
          "--onnx-asr", tmp_path / "onnx-asr", "--runs", "1", "--out-dir", tmp_path / "results", "--readme", readme,
          "--name", "tiny"])
    report = json.loads((tmp_path / "results" / "rtfx-tiny.json").read_text())
    assert [r["system"] for r in report["results"]] == ["nemo", "fp32", "int8", "onnx-asr"]
    assert (tmp_path / "onnx-asr" / "decoder_joint-model.onnx").is_file()
    _run([BENCH / "profile_encoder.py", "--model", shape / "int8-uint8", "--name", "tiny", "--seconds", "5",
          "--runs", "1", "--results", tmp_path / "results", "--readme", readme])
    profile = json.loads((tmp_path / "results" / "profile-tiny.json").read_text())
    assert profile["precision"] == "int8" and profile["ops"] and abs(sum(o["share"] for o in profile["ops"]) - 1) < 1e-6
    _run([BENCH / "first_runs.py", "--nemo", shape / "model.nemo", "--model", shape / "fp32", "--name", "tiny",
          "--seconds", "2", "4", "3", "--threads", "1", "--out-dir", tmp_path / "results", "--readme", readme])
    first_runs = json.loads((tmp_path / "results" / "first-runs-tiny.json").read_text())
    assert [s["system"] for s in first_runs["systems"]] == ["nemo", "ort-fp32"]
    assert all([r["seconds"] for r in s["rows"]] == [2.0, 4.0, 3.0] for s in first_runs["systems"])
    assert "<!-- first-runs-tiny:start -->" in readme.read_text()
    assert "<!-- profile-tiny:start -->" in readme.read_text()
    assert set(report["results"][1]["cases"]) == {"5s", "60s", "300s", "batch10"}
    assert "<!-- rtfx-tiny:start -->" in readme.read_text()


def test_onnx_asr_layout_runs_the_same_graphs(
    tmp_path: Path, converted: dict[str, Path], clips: dict[str, Path]
) -> None:
    """onnx-asr on the engine's own graphs (rearranged) reads the same words as the engine."""
    import onnx_asr

    from parakeet_runtime.engine import Engine

    sys.path.insert(0, str(BENCH))
    from onnx_asr_layout import write_layout

    write_layout(converted["tdt_a"], tmp_path / "layout")
    theirs = onnx_asr.load_model("nemo-conformer-tdt", tmp_path / "layout")
    engine = Engine.load(converted["tdt_a"])
    clip = clips["c2_sentence"]
    assert theirs.recognize(str(clip)).strip() == engine.transcribe(clip).text.strip()


def test_concurrency_and_server_load(tmp_path: Path, nemo_paths: dict[str, Path], converted: dict[str, Path],
                                     clips: dict[str, Path]) -> None:
    readme = tmp_path / "README.md"
    shutil.copy(BENCH / "README.md", readme)
    common: list[str | Path] = [
        "--nemo", nemo_paths["tdt_b"], "--model-dir", converted["tdt_b"],
        "--clips", clips["c1_short"], clips["c2_sentence"], "--readme", readme,
    ]
    _run([BENCH / "concurrency.py", *common, "--concurrency", "1", "2", "--requests", "4", "--out",
          tmp_path / "concurrency.json"])
    results = json.loads((tmp_path / "concurrency.json").read_text())["results"]
    assert {r["system"] for r in results} == {"nemo-unguarded", "nemo-lock", "engine-unbatched", "engine-batched"}
    assert all(r["errors"] == 0 for r in results if r["system"].startswith("engine"))
    _run([BENCH / "server_load.py", *common, "--concurrency", "1", "3", "--requests", "6", "--out",
          tmp_path / "server.json"])
    results = json.loads((tmp_path / "server.json").read_text())["results"]
    assert all(r["errors"] == 0 for r in results)
    text = readme.read_text()
    assert "<!-- concurrency:start -->" in text and "<!-- server_load:start -->" in text


def test_rtfx_systems_follow_their_flags(converted: dict[str, Path]) -> None:
    """``--logits`` adds its fp32 and int8 systems, ``--spinning`` its int8 one, ``--compare-int8`` a second int8
    directory; ``--only`` keeps a subset."""
    sys.path.insert(0, str(BENCH))
    import argparse

    from rtfx import RUNNERS, _source, _systems

    def namespace(**flags: object) -> argparse.Namespace:
        return argparse.Namespace(**{"int8": str(converted["tdt_a"]), "openvino": False, "onnx_asr": None,
                                     "fp32_decoding": False, "logits": False, "spinning": False, "only": None,
                                     "compare_int8": None, **flags})

    def systems(**flags: object) -> list[str]:
        return _systems(namespace(**flags))

    assert systems() == ["nemo", "fp32", "int8"]
    assert systems(logits=True, spinning=True) == ["nemo", "fp32", "fp32-logits", "int8", "int8-logits", "int8-spin"]
    assert systems(int8=None, logits=True) == ["nemo", "fp32", "fp32-logits"]
    assert RUNNERS["fp32-logits"].keywords == {"argmax_step": False}
    assert systems(spinning=True, only=["nemo", "int8-spin"]) == ["nemo", "int8-spin"]
    assert systems(int8=None, spinning=True) == ["nemo", "fp32"]
    assert RUNNERS["int8-spin"].keywords == {"spinning": True}
    assert systems(compare_int8="other") == ["nemo", "fp32", "int8", "int8-compare"]
    assert _source("int8-compare", namespace(compare_int8="other")) == "other"
    assert _source("int8", namespace(compare_int8="other")) == str(converted["tdt_a"])


def test_rtfx_rounds_pool_runs_and_keep_each_rounds_ratio() -> None:
    """``--rounds``: walls pooled over rounds, speed-up over NeMo overall and per round, largest memory."""
    sys.path.insert(0, str(BENCH))
    from rtfx import merge_rounds

    def result(system: str, walls: list[float], peak: float) -> dict[str, object]:
        case = {"audio_s": 60.0, "wall_s": sorted(walls)[1], "walls_s": walls, "rtfx": 60.0 / sorted(walls)[1],
                "peak_rss_mb": peak}
        if system != "nemo":
            case.update(features_s=0.1, encoder_s=walls[0] - 0.2, decoding_s=0.1)
        return {"system": system, "load_s": 1.0, "cases": {"60s": case}, "rss_after_load_mb": peak / 2,
                "peak_rss_mb": peak}

    rounds = [
        [result("nemo", [12.0, 13.0, 14.0], 5000.0), result("fp32", [8.0, 8.5, 9.0], 3000.0)],
        [result("nemo", [15.0, 16.0, 17.0], 5100.0), result("fp32", [10.0, 10.5, 11.0], 2900.0)],
    ]
    nemo, fp32 = merge_rounds(rounds)
    assert nemo["cases"]["60s"]["wall_s"] == 14.5 and "speedup_vs_nemo" not in nemo["cases"]["60s"]
    case = fp32["cases"]["60s"]
    assert case["walls_s"] == [8.0, 8.5, 9.0, 10.0, 10.5, 11.0] and case["wall_s"] == 9.5
    assert case["speedup_vs_nemo"] == 14.5 / 9.5
    assert case["speedup_vs_nemo_per_round"] == [13.0 / 8.5, 16.0 / 10.5]
    assert case["peak_rss_mb"] == 3000.0 and fp32["peak_rss_mb"] == 3000.0 and nemo["peak_rss_mb"] == 5100.0


def test_parakeet_models_converts_a_cached_int8_directory_again_when_its_choices_differ(tmp_path: Path) -> None:
    """The benchmark models' cache holds an int8 directory only for the choices it records (weights, activations):
    one converted before activations were scaled per row records none and counts as per tensor, so it is converted
    again rather than measured as per row."""
    sys.path.insert(0, str(BENCH))
    from parakeet_models import _holds, int8_folder

    def directory(name: str, quantization: dict[str, object] | None, signed: str | None = None) -> Path:
        folder = tmp_path / name
        folder.mkdir()
        manifest = {"encoder": {"signed_int8_file": signed}, "provenance": {"quantization": quantization}}
        (folder / "manifest.json").write_text(json.dumps(manifest))
        return folder

    auto_row = directory("a", {"weights": "uint8", "activations": "per-row"}, signed="encoder.int8w.onnx")
    assert _holds(auto_row, "auto", "per-row")
    assert not _holds(auto_row, "auto", "per-tensor") and not _holds(auto_row, "uint8", "per-row")
    before_rows = directory("b", {"weights": "uint8"}, signed="encoder.int8w.onnx")
    assert _holds(before_rows, "auto", "per-tensor") and not _holds(before_rows, "auto", "per-row")
    assert _holds(directory("c", {"weights": "int7", "activations": "per-tensor"}), "int7", "per-tensor")
    assert not _holds(directory("d", None), "auto", "per-row") and not _holds(tmp_path / "missing", "auto", "per-row")
    assert [int8_folder(w, a) for w, a in (("auto", "per-row-fixed"), ("auto", "per-tensor"), ("int7", "per-row-fixed"),
                                           ("int7", "per-tensor"), ("auto", "per-row"))] == [
        "int8", "int8-per-tensor", "int8-int7", "int8-int7-per-tensor", "int8-per-row"]


def test_precision_agreement_joins_clips_into_recordings() -> None:
    """Consecutive clips up to the length asked; a short remainder joins the last recording (a remainder after
    a recording that reached the length on its last clip once raised IndexError)."""
    sys.path.insert(0, str(BENCH))
    from precision_agreement import PAUSE_SECONDS, join_groups

    assert join_groups([], 60) == []
    assert join_groups([10, 10], 60) == [[0, 1]]
    assert join_groups([0.5, 1, 3, 9, 61, 9], 60) == [[0, 1, 2, 3, 4, 5]]
    assert join_groups([30, 30, 30, 30, 5], 60 + 2 * PAUSE_SECONDS) == [[0, 1], [2, 3, 4]]
    assert join_groups([70, 70], 60) == [[0], [1]]


def test_precision_agreement_script(tmp_path: Path, converted: dict[str, Path], clips: dict[str, Path]) -> None:
    """benchmarks/precision_agreement.py on a fixture: every configuration asked for gets a row (or says why it did
    not run), the fp32 reference agrees with itself through OpenVINO fp32 where that runs, and the README block
    is written."""
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n")
    out = tmp_path / "agreement.json"
    chosen = [clips["c1_short"], clips["c2_sentence"], clips["c3_multi"]]
    _run([BENCH / "precision_agreement.py", "--model", converted["tdt_b"], "--clips", *chosen, "--join", "5",
          "--name", "tiny", "--threads", "1", "--readme", readme, "--out", out,
          "--configs", "fp32, int8 decoding", "ORT int8 uint8, int8 decoding", "OpenVINO fp32"])
    report = json.loads(out.read_text())
    assert report["inputs"] > len(chosen) and report["fp32_tokens"] > 0
    rows = {row["config"]: row for row in report["rows"]}
    assert set(rows) == {"fp32, int8 decoding", "ORT int8 uint8, int8 decoding", "OpenVINO fp32"}
    for row in rows.values():
        assert "not_run" in row or 0.0 <= row["token_agreement"] <= 1.0
        if "not_run" not in row:
            assert 0.0 <= row["clip_agreement"] <= 1.0 and 0.0 <= row["joined_agreement"] <= 1.0
    if "not_run" not in rows["OpenVINO fp32"]:
        assert rows["OpenVINO fp32"]["token_agreement"] == 1.0
    assert "<!-- agreement-tiny:start -->" in readme.read_text()


def test_decoding_threads_script(tmp_path: Path, converted: dict[str, Path]) -> None:
    """benchmarks/decoding_threads.py on a fixture: a row per pool configuration and load, the same tokens in
    every configuration (threads do not change results), the engine's own choice named, the README block
    written; a malformed configuration is a usage error."""
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n")
    _run([BENCH / "decoding_threads.py", "--model", converted["tdt_a"], "--configs", "1/1", "2s/2",
          "--load", "0", "1", "--rounds", "1", "--reps", "1", "--seconds", "5s", "--name", "tiny",
          "--results", tmp_path, "--readme", readme])
    report = json.loads((tmp_path / "decoding-threads-tiny.json").read_text())
    assert [(r["config"], r["load"]) for r in report["results"]] == [("1/1", 0), ("2s/2", 0), ("1/1", 1), ("2s/2", 1)]
    assert report["meta"]["tokens_identical"] and report["meta"]["tokens"] > 0
    assert all(r["median_s"] > 0 for r in report["results"])
    assert report["meta"]["engine_config"] == "1/1"  # the fixture's graphs are small: one thread each
    assert "<!-- decoding-threads-tiny:start -->" in readme.read_text()
    proc = subprocess.run([sys.executable, BENCH / "decoding_threads.py", "--model", converted["tdt_a"],
                           "--configs", "2x/1"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "'2x'" in proc.stderr


def test_load_memory_script(tmp_path: Path, converted: dict[str, Path]) -> None:
    """benchmarks/load_memory.py on a fixture: a row per variant, each from its own process, with the memory after
    loading, the requests' peak and after them, the same text in every variant, the README block written."""
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n")
    _run([BENCH / "load_memory.py", "--model", converted["tdt_a"], "--variants", "engine", "neither",
          "--requests", "2", "--seconds", "5s", "--name", "tiny", "--results", tmp_path, "--readme", readme])
    report = json.loads((tmp_path / "load-memory-tiny.json").read_text())
    assert [r["variant"] for r in report["results"]] == ["engine", "neither"]
    for row in report["results"]:
        assert 0 < row["rss_after_load_mb"] <= row["load_peak_mb"]
        assert row["request_peak_mb"] >= row["rss_after_requests_mb"] > 0 and row["text"]
    assert report["meta"]["same_text"]
    assert "<!-- load-memory-tiny:start -->" in readme.read_text()


def test_decoding_threads_configurations_name_how_each_pool_spins() -> None:
    """``s``: spinning between runs; ``r``: only while a run is in progress (ONNX Runtime's force-stop entry); the
    engine's own pools are named the same way."""
    sys.path.insert(0, str(BENCH))
    from decoding_threads import config_entries, parse_config

    from parakeet_runtime.engine.model import onnx_model

    assert parse_config("2r/1") == ((2, "in_runs"), (1, "no"))
    assert parse_config("1/2s") == ((1, "no"), (2, "yes"))
    named = {spin: config_entries(onnx_model.session_options(2, spin)) for spin in ("no", "in_runs", "yes")}
    assert named["no"] == {"session.intra_op.allow_spinning=0"}
    assert named["in_runs"] == {"session.intra_op.allow_spinning=1", "session.force_spinning_stop=1"}
    assert named["yes"] == {"session.intra_op.allow_spinning=1"}


def test_joint_lookahead_script(tmp_path: Path, converted: dict[str, Path]) -> None:
    """benchmarks/joint_lookahead.py on a fixture: a row per pair with its runs (more frames per run in a run of
    blanks, no more joint runs), the same tokens for every pair, the engine's pair named, the README block written;
    a malformed pair is a usage error."""
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n")
    _run([BENCH / "joint_lookahead.py", "--model", converted["tdt_a"], "--pairs", "1/1", "5/8", "--rounds", "2",
          "--seconds", "5s", "--name", "tiny", "--results", tmp_path, "--readme", readme])
    report = json.loads((tmp_path / "joint-lookahead-tiny.json").read_text())
    one, engine = report["results"]
    assert (one["pair"], engine["pair"]) == ("1/1", "5/8")
    assert one["step_runs"] == engine["step_runs"] > 0 and one["joint_runs"] >= engine["joint_runs"]
    assert all(len(r["times_s"]) == 2 and r["median_s"] > 0 for r in report["results"])
    assert report["meta"]["tokens_identical"] and report["meta"]["engine_pair"] == "5/8"
    assert "<!-- joint-lookahead-tiny:start -->" in readme.read_text()
    proc = subprocess.run([sys.executable, BENCH / "joint_lookahead.py", "--model", converted["tdt_a"],
                           "--pairs", "0/8"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "'0/8'" in proc.stderr


def test_batched_decoding_script(tmp_path: Path, converted: dict[str, Path]) -> None:
    """benchmarks/batched_decoding.py on a fixture: a row per batch size, both searches timed each round, the same
    tokens from both, the engine's choice recorded, the README block written; a batch past the clips is a usage
    error."""
    readme = tmp_path / "README.md"
    readme.write_text("# Benchmarks\n")
    _run([BENCH / "batched_decoding.py", "--model", converted["tdt_a"], "--sizes", "1", "3", "--rounds", "2",
          "--name", "tiny", "--results", tmp_path, "--readme", readme])
    report = json.loads((tmp_path / "batched-decoding-tiny.json").read_text())
    assert [r["batch"] for r in report["results"]] == [1, 3]
    for row in report["results"]:
        assert row["identical"] and row["tokens"] > 0 and row["encoder_s"] > 0
        assert len(row["rows alone_times_s"]) == len(row["batched_times_s"]) == 2
    assert report["meta"]["decoder_weights"] == "fp32" and report["meta"]["engine_batches_decoding"]
    assert "<!-- batched-decoding-tiny:start -->" in readme.read_text()
    proc = subprocess.run([sys.executable, BENCH / "batched_decoding.py", "--model", converted["tdt_a"],
                           "--sizes", "11"], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 2 and "--sizes" in proc.stderr


def test_cpu_check_dry_run(tmp_path: Path) -> None:
    """benchmarks/cpu_check.sh's dry run (``QUICK=1``: the tiny shape, a few demo recordings) runs every step and
    writes each step's JSON and table under its scratch folder, naming this CPU's kind, and leaves
    benchmarks/README.md alone."""
    readme_before = (BENCH / "README.md").read_bytes()
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "PYTHON": sys.executable, "QUICK": "1", "FLOPS": "1",
           "OUT": str(tmp_path / "out"), "CLIPS": "4", "KIND": "testcpu"}
    proc = subprocess.run(["bash", str(BENCH / "cpu_check.sh")], capture_output=True, text=True, timeout=1200,
                          cwd=REPO, env=env)
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = tmp_path / "out" / "results-quick"
    rtfx = json.loads((results / "rtfx-parakeet-tiny-shape-testcpu-quick.json").read_text())
    systems = [r["system"] for r in rtfx["results"]]
    assert systems[:3] == ["nemo", "fp32", "int8"] and systems[-1] == "int8-compare"  # the same weights per tensor
    per_tensor = json.loads((tmp_path / "out" / "tiny" / "int8-per-tensor" / "manifest.json").read_text())
    assert per_tensor["provenance"]["quantization"]["activations"] == "per-tensor"
    assert rtfx["meta"]["int8_directories"] == {
        "int8": {"directory": "int8", "activations": "per-row-fixed"},
        "int8-compare": {"directory": "int8-per-tensor", "activations": "per-tensor"}}
    assert rtfx["meta"]["machine"]["isa"]
    flops = json.loads((results / "flop-rate-tiny-testcpu-quick.json").read_text())
    assert {row["system"] for row in flops["rows"]} >= {"nemo (torch)", "engine fp32 (ONNX Runtime)"}
    readme = (tmp_path / "out" / "README-cpu-check-quick.md").read_text()
    assert "<!-- rtfx-parakeet-tiny-shape-testcpu-quick:start -->" in readme
    assert "`int8-compare`: directory `int8-per-tensor` (int8 activations per-tensor)." in readme
    assert "<!-- flop-rate-tiny-testcpu-quick:start -->" in readme
    batched = json.loads((results / "batched-decoding-parakeet-tiny-shape-testcpu-quick-int8.json").read_text())
    assert batched["meta"]["decoder_weights"] in ("int8", "fp32") and all(r["identical"] for r in batched["results"])
    assert "<!-- batched-decoding-parakeet-tiny-shape-testcpu-quick-int8:start -->" in readme
    if shutil.which("espeak-ng"):
        agreement = json.loads((results / "agreement-demo-testcpu-quick.json").read_text())
        assert agreement["inputs"] > 4 and agreement["fp32_tokens"] > 0  # 4 recordings and their joins
        assert "<!-- agreement-demo-testcpu-quick:start -->" in readme
    else:
        assert "no espeak-ng" in proc.stderr
    assert (BENCH / "README.md").read_bytes() == readme_before
