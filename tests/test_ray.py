"""Ray Data and Ray Serve on a real local Ray cluster: a head node and a second node (``ray start``, one CPU
each, on this machine), started by the tests and always stopped in a finaliser.

* Ray Data: 200 files on both nodes, every row identical to ``engine.transcribe`` on the same file; an actor's
  process killed mid-job (SIGKILL): the job completes with every file exactly once. ``transcribe --ray``
  writes the batch mode's outputs.
* Ray Serve: 33 concurrent ``openai`` clients × 10 requests through Serve's HTTP proxy, 0 errors, results
  identical to the engine's; a replica killed under load: the clients see only retryable errors (and retry)
  and the service recovers to its two replicas.

The expected transcripts are the in-process engine's on the same files (its parity with NeMo is tested
elsewhere). Everything runs on the bundled demo model.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import Engine, Transcript, sample_audio_path
from parakeet_runtime.engine.serving.formats import render, round_time

ray = pytest.importorskip(
    "ray", reason="ray is not installed: pip install 'parakeet-runtime[ray]' (the dev extra installs it in CI)")

from parakeet_runtime.engine.ray_data import (  # noqa: E402
    RESULT_SCHEMA,
    EngineSpec,
    MissingColumnError,
    Transcriber,
    transcribe_dataset,
    transcript_from_row,
)
from parakeet_runtime.engine.ray_serve import DEPLOYMENT_NAME, ServeRunner, app, audio_seconds  # noqa: E402
from parakeet_runtime.engine.requests.prepare import PreparedAudio  # noqa: E402

pytestmark = pytest.mark.ray

RAY = Path(sys.executable).with_name("ray")
ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
"""A local test cluster: no token authentication (a token file in the home folder), no usage reporting."""
FILES = 200
SAMPLE, RATE = soundfile.read(sample_audio_path(), dtype="int16")
APP_NAME = "parakeet"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Cluster:
    """A head node and a worker node on this machine, each a ``ray start --block`` in its own session."""

    root: Path
    address: str = ""
    nodes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start_node(self, *args: str) -> None:
        ports = [f"--{name}={_free_port()}" for name in ("dashboard-agent-listen-port", "dashboard-agent-grpc-port",
                                                         "metrics-export-port", "runtime-env-agent-port")]
        log = open(self.root / f"node{len(self.nodes)}.log", "wb")  # noqa: SIM115 (the node keeps it)
        self.nodes.append(subprocess.Popen(
            [str(RAY), "start", "--block", "--num-cpus=1", "--node-ip-address=127.0.0.1", "--disable-usage-stats",
             *ports, *args], stdout=log, stderr=subprocess.STDOUT, env=os.environ | ENV, start_new_session=True))

    def wait_for_log(self, node: int, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        path = self.root / f"node{node}.log"
        while text not in path.read_text(errors="replace"):
            assert self.nodes[node].poll() is None, f"ray node {node} exited:\n{path.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"ray node {node} did not start:\n{path.read_text()[-3000:]}"
            time.sleep(0.25)

    def stop(self) -> None:
        """SIGTERM every node's process group (the node and all it started), SIGKILL what is left after 5 s."""
        for node in self.nodes:
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for node in self.nodes:
            with contextlib.suppress(subprocess.TimeoutExpired):
                node.wait(max(0.1, deadline - time.monotonic()))
            with contextlib.suppress(ProcessLookupError):  # the group outlives its leader: raylet, GCS, workers
                os.killpg(node.pid, signal.SIGKILL)
            node.wait()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes with one CPU each; this process is connected to it as a driver."""
    saved = {key: os.environ.get(key) for key in ENV}
    os.environ.update(ENV)
    # Ray's socket paths must be short: its own temporary folder, under /tmp.
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="ray-", dir="/tmp")))
    try:
        port = _free_port()
        cluster.address = f"127.0.0.1:{port}"
        cluster.start_node("--head", f"--port={port}", f"--temp-dir={cluster.root}", "--include-dashboard=false",
                           f"--ray-client-server-port={_free_port()}")
        cluster.wait_for_log(0, "Ray runtime started")
        cluster.start_node(f"--address={cluster.address}")
        ray.init(address=cluster.address, log_to_driver=False)
        deadline = time.monotonic() + 120
        while sum(1 for node in ray.nodes() if node["Alive"]) < 2:
            assert time.monotonic() < deadline, "the second node did not join"
            time.sleep(0.25)
        assert ray.cluster_resources()["CPU"] == 2
        yield cluster
    finally:
        try:
            ray.shutdown()
        finally:
            cluster.stop()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load() as loaded:
        yield loaded


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """200 short clips cut from the bundled sample: different lengths, gains and a little noise."""
    folder = tmp_path_factory.mktemp("clips")
    rng = np.random.default_rng(20)
    paths = []
    for number in range(FILES):
        length = int(rng.integers(RATE // 2, len(SAMPLE) + 1))
        start = int(rng.integers(0, len(SAMPLE) - length + 1)) if number % 3 == 0 else 0
        clip = SAMPLE[start:start + length].astype(np.float64) * rng.uniform(0.4, 1.0)
        clip += rng.normal(0.0, 20.0, size=clip.shape)
        path = folder / f"clip{number:03d}.wav"
        soundfile.write(path, np.clip(clip, -32768, 32767).astype(np.int16), RATE)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def expected(engine: Engine, files: list[Path]) -> dict[str, Transcript]:
    """The in-process engine's transcript of each file, one at a time."""
    return {str(path): engine.transcribe(path) for path in files}


def _actors(class_part: str) -> list[dict[str, Any]]:
    """Ray's actor table (``ray._private.state``: the GCS's, no dashboard needed) for one class."""
    return [actor for actor in ray._private.state.actors().values() if class_part in actor["ActorClassName"]]


def _rows(dataset: Any) -> Iterator[dict[str, Any]]:
    for batch in dataset.iter_batches(batch_format="pyarrow", batch_size=None):
        yield from batch.to_pylist()


# --- Ray Data ---------------------------------------------------------------------------------------------


def test_transcriber_batch_in_this_process(files: list[Path], expected: dict[str, Transcript]) -> None:
    """The callable class on its own (no cluster): paths or bytes in, the engine's transcripts out with the
    result schema; a value of the wrong type is that row's error; a missing column is a typed error."""
    import pyarrow as pa

    transcriber = Transcriber(EngineSpec(model=None, threads=1, max_batch_size=4), "audio")
    chosen = files[:5]
    batch = pa.table({"audio": [path.read_bytes() for path in chosen], "keep": list(range(5))})
    result = transcriber(batch)
    assert result.column_names == ["audio", "keep", *RESULT_SCHEMA.names]
    assert result.schema.field("words").type == RESULT_SCHEMA.field("words").type
    rows = result.to_pylist()
    assert [row["keep"] for row in rows] == list(range(5))
    assert [transcript_from_row(row) for row in rows] == [expected[str(path)] for path in chosen]
    wrong = Transcriber(EngineSpec(model=None, threads=1), "path")(pa.table({"path": [7]})).to_pylist()
    assert wrong[0]["error"] == "TypeError: a 'path' value must be a path (string) or audio bytes, not int"
    with pytest.raises(ValueError, match="the row was not transcribed: TypeError"):
        transcript_from_row(wrong[0])
    with pytest.raises(MissingColumnError, match="no column 'audio' to transcribe; its columns: path"):
        transcriber(pa.table({"path": [str(chosen[0])]}))


def test_ray_data_on_two_nodes_matches_the_engine(cluster: Cluster, files: list[Path],
                                                  expected: dict[str, Transcript], tmp_path: Path) -> None:
    """Every file's row rebuilds exactly the engine's transcript; bad rows carry their typed error; both nodes
    ran an actor."""
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF but not audio")
    missing = tmp_path / "missing.wav"
    paths = [str(path) for path in files] + [str(bad), str(missing)]
    dataset = ray.data.from_items([{"path": path, "n": number} for number, path in enumerate(paths)])
    before = {actor["ActorID"] for actor in _actors("Transcriber")}
    rows = list(_rows(transcribe_dataset(dataset, None, concurrency=2, batch_size=8, threads=1)))

    assert sorted(row["n"] for row in rows) == list(range(len(paths)))
    by_path = {row["path"]: row for row in rows}
    for path in map(str, files):
        row = by_path[path]
        assert row["error"] is None, row["error"]
        assert transcript_from_row(row) == expected[path], path
        assert row["text"] == expected[path].text
        assert [w["text"] for w in row["words"]] == [w.text for w in expected[path].words]
        assert [s["end"] for s in row["segments"]] == [s.end for s in expected[path].segments]
    assert by_path[str(bad)]["error"].startswith("AudioDecodeError: ")
    assert by_path[str(missing)]["error"].startswith("AudioFileNotFoundError: ")
    for row in (by_path[str(bad)], by_path[str(missing)]):
        assert row["text"] is None and row["words"] == [] and row["segments"] == []
    actors = [actor for actor in _actors("Transcriber") if actor["ActorID"] not in before]
    assert len({actor["Address"]["NodeID"] for actor in actors}) == 2, "the actors did not run on both nodes"


def test_ray_data_survives_a_killed_actor(cluster: Cluster, files: list[Path],
                                          expected: dict[str, Transcript]) -> None:
    """SIGKILL an actor's process once results are coming: the job still yields every file exactly once, each
    identical to the engine's transcript (the batch it held is retried)."""
    dataset = ray.data.from_items([{"path": str(path)} for path in files])
    before = {actor["ActorID"] for actor in _actors("Transcriber")}
    seen: list[str] = []
    killed: dict[str, Any] = {}
    for row in _rows(transcribe_dataset(dataset, None, concurrency=2, batch_size=4, threads=1)):
        assert row["error"] is None, row["error"]
        assert transcript_from_row(row) == expected[row["path"]], row["path"]
        seen.append(row["path"])
        if not killed and len(seen) >= 8:
            alive = [a for a in _actors("Transcriber") if a["ActorID"] not in before and a["State"] == "ALIVE"]
            assert alive, "no actor left to kill: the job ended before the kill"
            killed = alive[0]
            os.kill(killed["Pid"], signal.SIGKILL)
            killed["rows_before"] = len(seen)
    assert killed, "nothing was killed"
    assert sorted(seen) == sorted(map(str, files)), "a file was lost or duplicated"
    assert killed["rows_before"] < len(files), "the kill came after the job"
    with pytest.raises(ProcessLookupError):
        os.kill(killed["Pid"], 0)
    restarted = next(a for a in _actors("Transcriber") if a["ActorID"] == killed["ActorID"])
    assert restarted["NumRestarts"] >= 1 or restarted["State"] == "DEAD"


def test_cli_transcribe_on_ray(cluster: Cluster, files: list[Path], expected: dict[str, Transcript],
                               tmp_path: Path) -> None:
    """``transcribe --ray``: the batch mode's outputs, a bad file reported (exit 1), and a rerun skips what is
    done."""
    source = tmp_path / "in"
    source.mkdir()
    chosen = files[:12]
    for path in chosen:
        (source / path.name).write_bytes(path.read_bytes())
    (source / "broken.wav").write_bytes(b"not audio at all")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "transcribe", "--ray", cluster.address,
               str(source), "--output-dir", str(out), "--format", "json", "--format", "text", "--format", "jsonl",
               "--threads", "1", "--batch-size", "4"]
    first = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ | ENV)
    assert first.returncode == 1, first.stderr[-3000:]
    assert "12 ok, 1 failed, 0 skipped" in first.stderr
    assert "broken.wav" in first.stderr and "AudioDecodeError" in first.stderr
    for path in chosen:
        name = str(source / path.name)
        assert (out / f"{path.name}.json").read_text() == render([(name, expected[str(path)])], "json")
        assert (out / f"{path.name}.txt").read_text() == expected[str(path)].text + "\n"
    lines = [json.loads(line) for line in (out / "transcripts.jsonl").read_text().splitlines()]
    assert [line["file"] for line in lines] == sorted(str(source / path.name) for path in chosen)
    again = subprocess.run(command, capture_output=True, text=True, timeout=300, env=os.environ | ENV)
    assert again.returncode == 1, again.stderr[-3000:]
    assert "0 ok, 1 failed, 12 skipped" in again.stderr


def test_actors_and_replicas_load_the_session_and_long_form_options() -> None:
    """``EngineSpec`` and ``ReplicaOptions`` carry ``SessionOptions`` and ``LongFormOptions`` to the actors and
    replicas (``threads``, when given, replaces the session's)."""
    from parakeet_runtime.engine import LongFormOptions, SessionOptions
    from parakeet_runtime.engine.ray_serve import ReplicaOptions

    session = SessionOptions(decoder_weights="int8", threads=2)
    spec = EngineSpec(model=None, threads=1, session=session,
                      long_form=LongFormOptions(strategy="chunked", chunk_seconds=2.0))
    with spec.load() as engine:
        assert engine.model.decoder_weights == "int8"
        transcript = engine.transcribe(str(sample_audio_path()))
        assert transcript.strategy == "chunked" and transcript.text
    replica = ReplicaOptions(model=None, threads=1, session=session)
    assert replica.session_options() == SessionOptions(decoder_weights="int8", threads=1)
    assert ReplicaOptions(model=None).session_options() == SessionOptions()


def test_actors_and_replicas_load_on_the_device_and_reserve_its_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """``device`` reaches ``Engine.load`` in the actors and replicas; a GPU device reserves one GPU per actor or
    replica (so Ray schedules them onto GPU nodes); an unknown device is refused before anything starts."""
    from parakeet_runtime.engine import ray_data, ray_serve
    from parakeet_runtime.engine.model.devices import gpus_per_engine

    with EngineSpec(model=None, threads=1, device="cpu").load() as engine:
        assert engine.transcribe(str(sample_audio_path())).text
    assert [gpus_per_engine(d) for d in (None, "cpu", "cuda", "tensorrt")] == [0.0, 0.0, 1.0, 1.0]
    with pytest.raises(ValueError, match="unknown device"):
        gpus_per_engine("tpu")
    loads: list[dict[str, Any]] = []
    monkeypatch.setattr(Engine, "load", lambda *args, **kwargs: loads.append(kwargs))
    EngineSpec(model=None, device="cuda").load()
    assert loads[-1]["device"] == "cuda"

    mapped: dict[str, Any] = {}

    class FakeDataset:
        def map_batches(self, fn: Any, **options: Any) -> None:
            mapped.update(options)

    ray_data.transcribe_dataset(cast(Any, FakeDataset()), None, device="tensorrt")
    assert mapped["num_gpus"] == 1.0 and mapped["fn_constructor_args"][0].device == "tensorrt"
    ray_data.transcribe_dataset(cast(Any, FakeDataset()), None)
    assert mapped["num_gpus"] == 0.0
    with pytest.raises(ValueError, match="unknown device"):
        ray_data.transcribe_dataset(cast(Any, FakeDataset()), None, device="gpu")

    application = ray_serve.app(None, device="cuda")
    deployment = application._bound_deployment  # what Serve would deploy
    assert (deployment.ray_actor_options or {})["num_gpus"] == 1.0
    assert deployment.init_args[0].device == "cuda"
    with pytest.raises(ValueError, match="unknown device"):
        ray_serve.app(None, device="gpu")


def test_cli_transcribe_on_ray_forwards_the_engine_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``transcribe --ray`` hands ``--backend/--precision/--decoder-weights/--threads`` and ``--strategy/--chunk-s``
    to the actors (the cluster call itself is replaced here; the cluster tests run the real one)."""
    from parakeet_runtime.engine import ray_data
    from parakeet_runtime.engine.serving import cli

    seen: dict[str, Any] = {}

    def fake(inputs: Any, model: Any, **options: Any) -> Any:
        seen.update(options)
        from parakeet_runtime.engine.serving.batch import BatchTally
        return BatchTally(options["progress"]).summary(False)

    monkeypatch.setattr(ray_data, "transcribe_inputs_on_ray", fake)
    monkeypatch.setattr(cli, "_connect", lambda *args: True)
    monkeypatch.setattr(ray, "nodes", lambda: [{"Alive": True}])
    monkeypatch.setattr(ray, "shutdown", lambda: None)
    clip = tmp_path / "a.wav"
    clip.write_bytes(sample_audio_path().read_bytes())
    code = cli.main(["transcribe", "--ray", "auto", str(clip), "--output-dir", str(tmp_path / "out"), "--threads", "1",
                     "--decoder-weights", "int8", "--strategy", "chunked", "--chunk-s", "30"])
    assert code == 0
    assert seen["session"].threads == 1 and seen["session"].decoder_weights == "int8"
    assert (seen["long_form"].strategy, seen["long_form"].chunk_seconds) == ("chunked", 30.0)
    assert seen["device"] is None
    assert cli.main(["transcribe", "--ray", "auto", str(clip), "--output-dir", str(tmp_path / "out2"),
                     "--device", "cpu"]) == 0
    assert seen["device"] == "cpu"
    with pytest.raises(SystemExit) as refused:  # a bad value: a usage error, before connecting
        cli.main(["transcribe", "--ray", "auto", str(clip), "--output-dir", str(tmp_path / "out"), "--chunk-s", "0"])
    assert refused.value.code == 2


def test_cli_ray_flags_are_checked_before_connecting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Flag combinations that cannot work fail at once (argparse: exit 2), as does standard input with --ray."""
    from parakeet_runtime.engine.serving.cli import main

    for argv, message in [
        (["transcribe", "--ray", "auto", "x.wav"], "--ray needs --output-dir"),
        (["transcribe", "--ray-actors", "2", "x.wav"], "--ray-actors needs --ray"),
        (["serve", "--replicas", "2"], "--replicas and --max-replicas need --ray"),
        (["serve", "--ray", "--replicas", "3", "--max-replicas", "2"], "--max-replicas at least --replicas"),
    ]:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        assert message in capsys.readouterr().err, argv
    assert main(["transcribe", "--ray", "auto", "-", "--output-dir", str(tmp_path)]) == 2
    assert "--ray cannot read standard input" in capsys.readouterr().err


# --- Ray Serve --------------------------------------------------------------------------------------------


@dataclass
class ServeLoad:
    """What the clients saw: every HTTP status, client-side exceptions, and the transcripts."""

    statuses: list[int] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    results: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _verbose(transcript: Transcript) -> dict[str, Any]:
    """What ``verbose_json`` with word and segment timestamps must say for ``transcript``."""
    return {"text": transcript.text,
            "words": [(w.text, round_time(w.start), round_time(w.end)) for w in transcript.words],
            "segments": [(s.text, round_time(s.start), round_time(s.end)) for s in transcript.segments]}


def _run_clients(url: str, clips: list[Path], load: ServeLoad, *, clients: int, requests: int, retries: int,
                 on_response: Any = None) -> None:
    import openai

    def client_loop(number: int) -> None:
        def record(response: Any) -> None:  # an httpx (or, for newer openai, httpx2) response
            with load.lock:
                load.statuses.append(response.status_code)
            if on_response is not None:
                on_response()

        http = openai.DefaultHttpxClient(event_hooks={"response": [record]}, timeout=120)
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=retries, http_client=http)
        try:
            for request in range(requests):
                clip = (number * requests + request) % len(clips)
                try:
                    with open(clips[clip], "rb") as handle:
                        reply = client.audio.transcriptions.create(
                            model="parakeet", file=handle, response_format="verbose_json",
                            timestamp_granularities=["word", "segment"])
                except openai.OpenAIError as exc:
                    with load.lock:
                        load.failures.append(f"{type(exc).__name__}: {exc}")
                    continue
                body = reply.model_dump()
                with load.lock:
                    load.results.append((clip, {
                        "text": body["text"],
                        "words": [(w["word"], w["start"], w["end"]) for w in body["words"]],
                        "segments": [(s["text"], s["start"], s["end"]) for s in body["segments"]]}))
        finally:
            http.close()

    with concurrent.futures.ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client_loop, range(clients)))


def test_serve_batches_are_sized_by_audio_seconds() -> None:
    """``batch_size_fn`` counts whole seconds of audio, at least 1 per request and at most the batch's limit
    (a request longer than ``max_batch_seconds`` runs alone instead of failing Serve's size check)."""
    import asyncio

    loop = asyncio.new_event_loop()
    try:
        runner = ServeRunner(cast(Any, None), loop, 2.5)
        items = [runner.item(PreparedAudio(duration=seconds, features=None, valid_frames=0))
                 for seconds in (0.2, 1.0, 1.2, 4.8)]
    finally:
        loop.close()
    assert [item.weight for item in items] == [1, 1, 2, 2]
    assert audio_seconds(items) == 6
    assert audio_seconds(items[:2]) == 2
    with pytest.raises(ValueError, match="max_batch_seconds must be at least 1"):
        app(None, max_batch_seconds=0.5)
    with pytest.raises(ValueError, match="num_replicas or autoscaling_config"):
        app(None, num_replicas=2, autoscaling_config={"min_replicas": 1, "max_replicas": 2})


def test_cli_serve_on_ray(cluster: Cluster, files: list[Path], expected: dict[str, Transcript]) -> None:
    """``serve --ray``: the API answers through Serve's proxy on --port (each replica warmed up first:
    ``--warm-up-seconds``); SIGTERM stops it (exit 0) and, as it was Serve's only application, Serve with it."""
    import httpx

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    command = [sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "serve", "--ray", cluster.address,
               "--port", str(port), "--threads", "1", "--replicas", "1", "--warm-up-seconds", "2"]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=os.environ | ENV)
    try:
        deadline = time.monotonic() + 180
        while True:
            assert proc.poll() is None, proc.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "serve --ray did not come up"
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/health", timeout=5).status_code == 200:
                    break
            time.sleep(0.5)
        load = ServeLoad()
        _run_clients(url, files[:3], load, clients=3, requests=2, retries=0)
        assert load.failures == [] and load.statuses == [200] * 6
        for clip, result in load.results:
            assert result == _verbose(expected[str(files[clip])])
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        assert "parakeet-runtime: stopped" in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"{url}/health", timeout=5)


@pytest.fixture(scope="module")
def served(cluster: Cluster) -> Iterator[str]:
    """The Serve application with two replicas behind Serve's HTTP proxy; yields its URL."""
    from ray import serve

    port = _free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port}, proxy_location="HeadOnly")
    try:
        # 16 requests per replica at most: 33 clients need both (the proxy prefers the replica on its own node).
        serve.run(app(None, num_replicas=2, threads=1, num_cpus=1.0, max_ongoing_requests=16), name=APP_NAME,
                  route_prefix="/")
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]


def _replica_pids() -> set[int]:
    from ray import serve

    handle = serve.get_app_handle(APP_NAME)
    pids: set[int] = set()
    deadline = time.monotonic() + 60
    while len(pids) < 2 and time.monotonic() < deadline:
        pids.add(handle.stats.remote().result()["pid"])
    return pids


def test_serve_33_clients_identical_to_the_engine(served: str, files: list[Path],
                                                  expected: dict[str, Transcript]) -> None:
    """33 concurrent openai clients × 10 requests: every answer 200 and identical to the engine's; both replicas
    served, and Serve's batches held several requests."""
    from ray import serve

    clips = files[:10]
    load = ServeLoad()
    _run_clients(served, clips, load, clients=33, requests=10, retries=0)
    assert load.failures == []
    assert load.statuses == [200] * 330
    assert len(load.results) == 330
    for clip, result in load.results:
        assert result == _verbose(expected[str(clips[clip])]), clips[clip]
    handle = serve.get_app_handle(APP_NAME)
    stats: dict[int, dict[str, int]] = {}
    deadline = time.monotonic() + 60
    while len(stats) < 2 and time.monotonic() < deadline:
        replica = handle.stats.remote().result()
        stats[replica["pid"]] = replica
    assert len(stats) == 2
    assert sum(replica["requests"] for replica in stats.values()) >= 330
    assert all(replica["requests"] > 0 for replica in stats.values()), stats
    assert max(replica["largest"] for replica in stats.values()) > 1, f"no batch held two requests: {stats}"


def test_serve_recovers_from_a_killed_replica(served: str, files: list[Path],
                                              expected: dict[str, Transcript]) -> None:
    """SIGKILL a replica's process under load (33 clients): clients see only retryable errors (5xx, which the
    openai client retries), every request ends identical to the engine's, and Serve brings back two replicas
    that answer without retries."""
    from ray import serve

    clips = files[:10]
    pids = _replica_pids()
    assert len(pids) == 2
    victim = min(pids)
    load = ServeLoad()
    killed = threading.Event()

    def maybe_kill() -> None:
        if len(load.statuses) >= 60 and not killed.is_set():
            killed.set()
            os.kill(victim, signal.SIGKILL)

    _run_clients(served, clips, load, clients=33, requests=10, retries=8, on_response=maybe_kill)
    assert killed.is_set()
    assert load.failures == [], load.failures[:5]
    assert len(load.results) == 330
    for clip, result in load.results:
        assert result == _verbose(expected[str(clips[clip])]), clips[clip]
    errors = [status for status in load.statuses if status != 200]
    assert all(status >= 500 or status in (408, 429) for status in errors), errors

    deadline = time.monotonic() + 120
    while True:
        status = serve.status().applications[APP_NAME]
        states = status.deployments[DEPLOYMENT_NAME].replica_states
        running = sum(count for state, count in states.items() if state == "RUNNING")
        if status.status == "RUNNING" and running == 2:
            break
        assert time.monotonic() < deadline, f"Serve did not recover: {status}"
        time.sleep(0.5)
    pids_after = _replica_pids()
    assert len(pids_after) == 2 and victim not in pids_after
    after = ServeLoad()
    _run_clients(served, clips, after, clients=4, requests=5, retries=0)
    assert after.failures == [] and after.statuses == [200] * 20
    for clip, result in after.results:
        assert result == _verbose(expected[str(clips[clip])])
