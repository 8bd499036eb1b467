"""Decoding alone, by the thread pools of its two graphs, on a quiet machine and on a loaded one.

A greedy TDT search runs the step graph (prediction network and joint) once per emitted label and the joint
alone once per run of blanks past the lookahead: a few hundred ONNX Runtime runs of well under a millisecond
for a minute of speech, each bound by reading the graphs' weights. How many threads those runs get, and
whether the threads spin between runs, decides what each run pays beyond its arithmetic. This script times
the search over one clip (right after an encoder run on it, as in a request: the encoder has evicted the
decoding weights from the caches) for each configuration of the two pools, every configuration in a fresh
process, the configurations taking turns over the rounds; optionally with busy processes beside it (a server
that shares its cores). The tokens must be the same in every configuration.

    python benchmarks/decoding_threads.py --model ~/.cache/parakeet-bench/v3/int8 --load 0 1 --readme

A configuration is ``STEP/JOINT``, each ``THREADS`` with ``s`` appended when that pool spins between runs, ``r`` when
it spins only while a run is in progress: ``2/2`` is the engine's choice for large decoding graphs on two threads.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from concurrency import machine
from readme_block import measured_on, worker_result, write_block, write_json
from rtfx import make_clips, one_pass

if TYPE_CHECKING:
    from parakeet_runtime.engine.model.onnx_model import Spin

DEFAULT_CONFIGS = ["2r/2r", "2/2", "2s/2", "1/1"]
BUSY = "while True: pass"


_SPINS: dict[str, Spin] = {"s": "yes", "r": "in_runs"}


def parse_config(text: str) -> tuple[tuple[int, Spin], tuple[int, Spin]]:
    """``"2s/1"`` -> ``((2, "yes"), (1, "no"))``: (threads, spin) of the step pool and of the joint's."""
    pools = text.split("/")
    if len(pools) != 2:
        raise argparse.ArgumentTypeError(f"a configuration is STEP/JOINT, got {text!r}")
    parsed = []
    for pool in pools:
        spin = _SPINS.get(pool[-1:], "no")
        digits = pool[:-1] if spin != "no" else pool
        if not digits.isdigit() or int(digits) < 1:
            raise argparse.ArgumentTypeError(f"a pool is THREADS with an optional 's' or 'r', got {pool!r} in {text!r}")
        parsed.append((int(digits), spin))
    return parsed[0], parsed[1]


def config_argument(text: str) -> str:
    """An argparse type: ``text`` when it is a valid configuration (a usage error otherwise)."""
    parse_config(text)
    return text


def worker(model: str, config: str, clip: Path, reps: int, threads: int) -> dict[str, Any]:
    """Time the search ``reps`` times in this process with the pools ``config`` asks for."""
    from parakeet_runtime.decoding import tdt_greedy_decode
    from parakeet_runtime.engine import Engine, SessionOptions
    from parakeet_runtime.engine.model import onnx_model
    from parakeet_runtime.engine.requests.inference import JOINT_LOOKAHEAD, LABEL_LOOKAHEAD

    (step_threads, step_spin), (joint_threads, joint_spin) = parse_config(config)
    engine = Engine.load(model, session=SessionOptions(threads=threads))
    inference = engine.inference
    prepared = one_pass(engine.prepare(clip))
    base = engine.model
    manifest = base.manifest
    directory = Path(model)
    columns = onnx_model.joint_columns(manifest)
    predictor_file = manifest.step.file if manifest.step else manifest.predictor.file
    logits = (manifest.step.output_logits if manifest.step else None, manifest.joint.output_logits)
    graphs: list[Path | bytes] = []
    for file, output in zip((predictor_file, manifest.joint.file), logits, strict=True):
        if base.argmax and output is not None:  # the engine's graphs end in the joint's choices: so do these
            graphs.append(onnx_model.choice_graph(directory / file, output, file, base.decoder_weights, columns)[0])
        else:
            graphs.append(onnx_model.decoding_graph(directory / file, file, base.decoder_weights, columns))
    providers = ["CPUExecutionProvider"]
    chosen = dataclasses.replace(
        base,
        predictor_session=onnx_model.graph_session(graphs[0], providers, step_threads, step_spin),
        joint_session=onnx_model.graph_session(graphs[1], providers, joint_threads, joint_spin),
    )
    times, tokens = [], None
    for _ in range(reps):
        frames, lengths = inference.encode_batch([prepared])
        start = time.perf_counter()
        result = tdt_greedy_decode(frames[0], int(lengths[0]), chosen, inference.tdt_config,
                                   lookahead=JOINT_LOOKAHEAD, label_lookahead=LABEL_LOOKAHEAD)
        times.append(time.perf_counter() - start)
        tokens = [t.id for t in result.tokens]
    return {"config": config, "times_s": times, "tokens": tokens, "decoder_weights": base.decoder_weights}


def run_config(args: argparse.Namespace, config: str, clip: Path) -> dict[str, Any]:
    command = [sys.executable, __file__, "--model", args.model, "--worker", config, "--clip", str(clip),
               "--reps", str(args.reps), "--threads", str(args.threads)]
    return worker_result(command, f"configuration {config} failed")


def measure(args: argparse.Namespace, clip: Path, load: int) -> list[dict[str, Any]]:
    """Every configuration over ``args.rounds`` rounds, with ``load`` busy processes running throughout."""
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(load)]
    try:
        runs: dict[str, list[dict[str, Any]]] = {c: [] for c in args.configs}
        for _ in range(args.rounds):
            for config in args.configs:
                runs[config].append(run_config(args, config, clip))
    finally:
        for process in busy:
            process.kill()
            process.wait()
    results = []
    for config, rounds in runs.items():
        times = [t for r in rounds for t in r["times_s"]]
        first = rounds[0]
        results.append({"config": config, "load": load, "median_s": statistics.median(times), "min_s": min(times),
                        "times_s": times, "tokens": first["tokens"], "decoder_weights": first["decoder_weights"],
                        "same_tokens_every_run": all(r["tokens"] == first["tokens"] for r in rounds)})
    return results


def write_table(report: dict[str, Any], readme: Path) -> None:
    meta = report["meta"]
    lines = [
        f"{measured_on(meta)}; model `{meta['model']}` ({meta['decoder_weights']} decoding weights), "
        f"{meta['clip_s']:.0f} s clip, {meta['tokens']} tokens; "
        f"engine threads {meta['threads']}; {meta['rounds']} rounds × {meta['reps']} searches per configuration "
        "(each right after an encoder run), fresh process each.",
        "",
        "| step / joint pools | busy processes beside it | median (s) | fastest (s) | × the engine's choice |",
        "|---|---:|---:|---:|---:|",
    ]
    by_load: dict[int, dict[str, float]] = {}
    for r in report["results"]:
        by_load.setdefault(r["load"], {})[r["config"]] = r["median_s"]
    for r in report["results"]:
        reference = by_load[r["load"]].get(meta["engine_config"])
        ratio = f"{reference / r['median_s']:.2f}×" if reference else "–"
        lines.append(f"| `{r['config']}` | {r['load']} | {r['median_s']:.3f} | {r['min_s']:.3f} | {ratio} |")
    lines += ["", f"`{meta['engine_config']}`: the engine's choice for this model when this ran. A pool written `Ns` "
              "spins between runs, `Nr` only while a run is in progress. Tokens identical in every run of every "
              f"configuration: {'yes' if meta['tokens_identical'] else '**no**'}."]
    write_block(readme, f"decoding-threads-{meta['name']}", lines, f"Decoding threads: {meta['name']}")


def config_entries(options: Any) -> set[str]:
    """The ``key=value`` session config entries of ONNX Runtime ``options`` that say how its pool spins."""
    entries = set()
    for key in ("session.intra_op.allow_spinning", "session.force_spinning_stop"):
        try:
            entries.add(f"{key}={options.get_session_config_entry(key)}")
        except RuntimeError:  # not set
            continue
    return entries


def engine_config(model: str, threads: int) -> str:
    """The pools :func:`onnx_model.step_graph_session` gives this model's decoding graphs on ``threads``."""
    from parakeet_runtime.engine import Engine, SessionOptions

    engine = Engine.load(model, session=SessionOptions(threads=threads))
    pools = []
    for session in (engine.model.predictor_session, engine.model.joint_session):
        options = session.get_session_options()
        count = options.intra_op_num_threads or threads
        spinning = options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        stops = spinning and "session.force_spinning_stop=1" in config_entries(options)
        pools.append(f"{count}{('r' if stops else 's') if spinning else ''}")
    return "/".join(pools)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a converted model directory")
    parser.add_argument("--configs", nargs="+", type=config_argument, default=DEFAULT_CONFIGS,
                        help="STEP/JOINT pools (see above)")
    parser.add_argument("--load", type=int, nargs="+", default=[0, 1], help="busy processes beside the search")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--reps", type=int, default=3, help="searches per process (each after an encoder run)")
    parser.add_argument("--threads", type=int, default=2, help="the engine's threads (SessionOptions.threads)")
    parser.add_argument("--seconds", default="60s", choices=["5s", "60s", "300s"], help="the clip")
    parser.add_argument("--name", default=None, help="results/decoding-threads-NAME.json (default: the model's folder)")
    parser.add_argument("--results", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument("--readme", nargs="?", const=Path(__file__).parent / "README.md", type=Path, default=None)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--clip", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print("RESULT " + json.dumps(worker(args.model, args.worker, args.clip, args.reps, args.threads)))
        return 0
    with tempfile.TemporaryDirectory() as folder:
        clip = make_clips(Path(folder))[args.seconds][0]
        results = [r for load in args.load for r in measure(args, clip, load)]
    model = Path(args.model).expanduser()
    name = args.name or model.name
    tokens = results[0]["tokens"]
    meta = {"name": name, "model": f"{model.parent.name}/{model.name}", "date": date.today().isoformat(),
            "machine": machine(), "threads": args.threads, "rounds": args.rounds, "reps": args.reps,
            "clip_s": float(args.seconds[:-1]), "tokens": len(tokens), "decoder_weights": results[0]["decoder_weights"],
            "engine_config": engine_config(str(model), args.threads),
            "tokens_identical": all(r["tokens"] == tokens and r["same_tokens_every_run"] for r in results)}
    report = {"meta": meta, "results": results}
    write_json(args.results / f"decoding-threads-{name}.json", report)
    for r in results:
        median, fastest = r["median_s"] * 1e3, r["min_s"] * 1e3
        print(f"{r['config']:>8} load {r['load']}: median {median:7.1f} ms, fastest {fastest:7.1f} ms")
    if args.readme:
        write_table(report, args.readme)
    return 0 if meta["tokens_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
