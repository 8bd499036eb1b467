"""``parakeet-runtime transcribe`` in batch mode: directories, globs, manifests and stdin as inputs;
``--output-dir`` with every format; a corrupt input reported and skipped; resume after a partial or an
interrupted (SIGINT) run; PyAV for containers libsndfile cannot read.

Everything runs on the bundled demo model with short clips cut from the bundled sample. The expected
transcripts are the engine's own on the same files (its parity with NeMo is tested elsewhere): the CLI
must write exactly those, in every format.
"""

from __future__ import annotations

import io
import json
import os
import pty
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import AudioDecodeError, Engine, Transcript, load_audio, sample_audio_path
from parakeet_runtime.engine.requests.containers import AV_EXTRA_HINT, container_kind
from parakeet_runtime.engine.serving.batch import COMBINED_JSONL, OutputPlan, transcribe_inputs, write_atomic
from parakeet_runtime.engine.serving.cli import main
from parakeet_runtime.engine.serving.formats import render
from parakeet_runtime.engine.serving.inputs import BatchInput, InputListError, collect_inputs, read_manifest
from parakeet_runtime.engine.serving.progress import Progress
from parakeet_runtime.engine.serving.signals import interruptions_deferred, sigterm_raises

ALL_FORMATS = ("text", "json", "srt", "vtt", "jsonl")
FILE_FORMATS = {"text": "txt", "json": "json", "srt": "srt", "vtt": "vtt"}
CLI = [sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "transcribe"]
SAMPLE, RATE = soundfile.read(sample_audio_path(), dtype="int16")
CLIP_SAMPLES = (RATE // 2 + 800, RATE + 3200, 2 * RATE + 1234, len(SAMPLE))
"""Lengths (in samples) of the clips the tests cut from the sample: 0.55 s to the whole 4.8 s."""


def write_clip(path: Path, kind: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    soundfile.write(path, SAMPLE[: CLIP_SAMPLES[kind]], RATE)
    return path


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load() as loaded:
        yield loaded


@pytest.fixture(scope="module")
def expected(engine: Engine, tmp_path_factory: pytest.TempPathFactory) -> list[Transcript]:
    """The engine's transcript of each clip kind."""
    folder = tmp_path_factory.mktemp("reference")
    return [engine.transcribe(write_clip(folder / f"{kind}.wav", kind)) for kind in range(len(CLIP_SAMPLES))]


def transcribe(*args: str | Path) -> int:
    return main(["transcribe", *map(str, args)])


def format_args(formats: tuple[str, ...] = ALL_FORMATS) -> list[str]:
    return [part for fmt in formats for part in ("--format", fmt)]


def leftovers(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if path.name.endswith(".tmp")]


# --- inputs ---------------------------------------------------------------------------------------------


def test_directory_with_every_format(tmp_path: Path, expected: list[Transcript],
                                     capsys: pytest.CaptureFixture[str]) -> None:
    """A directory is searched recursively; outputs mirror the tree, so two ``a.wav`` do not collide; each
    format's file is the render of the engine's transcript; ``transcripts.jsonl`` has one line per input."""
    source = tmp_path / "in"
    kinds = {"a.wav": 0, "x/a.wav": 1, "x/y/b.flac": 2, "c.ogg": 3}
    for name, kind in kinds.items():
        write_clip(source / name, kind)
    (source / "notes.txt").write_text("not audio")  # a directory contributes audio extensions only
    out = tmp_path / "out"
    assert transcribe(source, "--output-dir", out, *format_args()) == 0
    assert "4 ok, 0 failed, 0 skipped" in capsys.readouterr().err
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file())
    assert written == sorted([COMBINED_JSONL] + [f"{name}.{ext}" for name in kinds for ext in FILE_FORMATS.values()])
    for name, kind in kinds.items():
        for fmt, ext in FILE_FORMATS.items():
            got = (out / f"{name}.{ext}").read_text(encoding="utf-8")
            assert got == render([(str(source / name), expected[kind])], fmt), (name, fmt)
        assert json.loads((out / f"{name}.json").read_text())["text"] == expected[kind].text
    lines = [json.loads(line) for line in (out / COMBINED_JSONL).read_text().splitlines()]
    assert [line["file"] for line in lines] == sorted(str(source / name) for name in kinds)  # directory order
    assert {line["file"]: line["text"] for line in lines} == {
        str(source / name): expected[kind].text for name, kind in kinds.items()}
    assert not leftovers(tmp_path)


def test_globs_and_manifests(tmp_path: Path, expected: list[Transcript], capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``**`` glob, a plain manifest and NeMo's JSON-lines manifest (paths relative to the manifest's
    folder) give the inputs in the order given; without --output-dir the transcripts go to stdout."""
    for name, kind in {"d/one.wav": 0, "d/sub/two.wav": 1, "m/three.wav": 2, "m/four.wav": 3}.items():
        write_clip(tmp_path / name, kind)
    (tmp_path / "m" / "plain.txt").write_text("# a comment\nthree.wav\n\n")
    (tmp_path / "m" / "nemo.json").write_text(
        json.dumps({"audio_filepath": "four.wav", "duration": 4.8, "text": "x"}) + "\n")
    monkeypatch.chdir(tmp_path)
    assert transcribe("d/**/*.wav", "--manifest", "m/plain.txt", "--manifest", "m/nemo.json",
                      "--format", "jsonl") == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [(line["file"], line["text"]) for line in lines] == [
        ("d/one.wav", expected[0].text), (os.path.join("d", "sub", "two.wav"), expected[1].text),
        (os.path.join("m", "three.wav"), expected[2].text), (os.path.join("m", "four.wav"), expected[3].text)]


def test_stdin(tmp_path: Path, expected: list[Transcript]) -> None:
    clip = write_clip(tmp_path / "clip.wav", 2)
    printed = subprocess.run([*CLI, "-"], input=clip.read_bytes(), capture_output=True, timeout=120)
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.decode() == expected[2].text + "\n"
    out = tmp_path / "out"
    written = subprocess.run([*CLI, "-", str(clip), "--output-dir", str(out), "--format", "json"],
                             input=clip.read_bytes(), capture_output=True, timeout=120)
    assert written.returncode == 0, written.stderr
    from_stdin = json.loads((out / "stdin.json").read_text())
    assert (from_stdin["file"], from_stdin["text"]) == ("-", expected[2].text)
    assert json.loads((out / "clip.wav.json").read_text())["text"] == expected[2].text


def test_bad_input_lists(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A glob or directory with no audio, or a malformed manifest, stops before loading anything (exit 2)."""
    (tmp_path / "empty").mkdir()
    bad_manifest = tmp_path / "bad.json"
    bad_manifest.write_text('{"audio_filepath": "a.wav"}\n{"duration": 1.0}\n')
    for args, message in [((str(tmp_path / "*.nothing"),), "no files match"),
                          ((str(tmp_path / "empty"),), "no audio files"),
                          (("--manifest", str(bad_manifest)), f"{bad_manifest}:2"),
                          (("--manifest", str(tmp_path / "missing.txt")), "cannot read manifest")]:
        assert transcribe(*args) == 2, args
        assert message in capsys.readouterr().err, args
    with pytest.raises(InputListError, match="not valid JSON"):
        (tmp_path / "broken.json").write_text("{oops\n")
        read_manifest(tmp_path / "broken.json")
    (tmp_path / "stdin").write_bytes(b"")
    with pytest.raises(InputListError, match="same outputs"):
        collect_inputs(["-", str(tmp_path / "stdin")])
    with pytest.raises(SystemExit):
        main(["transcribe", "--format", "json", "--format", "srt"])  # several formats need --output-dir


def test_an_unusable_output_dir_stops_before_any_input(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A file where the directory should be, or below one: one line and exit 2, before the model loads."""
    (tmp_path / "afile").write_text("")
    for directory in (tmp_path / "afile", tmp_path / "afile" / "sub"):
        assert transcribe("--output-dir", str(directory)) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"--output-dir {directory}" in err, err


# --- failures, resume, interruption ------------------------------------------------------------------------


def test_corrupt_file_is_reported_and_the_rest_done(tmp_path: Path, expected: list[Transcript],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in"
    write_clip(source / "good1.wav", 0)
    write_clip(source / "good2.wav", 1)
    (source / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage")
    out = tmp_path / "out"
    assert transcribe(source, "--output-dir", out, *format_args()) == 1
    err = capsys.readouterr().err
    assert "corrupt.wav" in err and "error" in err
    assert "2 ok, 1 failed, 0 skipped" in err
    assert not list(out.glob("corrupt*"))
    assert json.loads((out / "good2.wav.json").read_text())["text"] == expected[1].text
    assert [json.loads(line)["file"] for line in (out / COMBINED_JSONL).read_text().splitlines()] == [
        str(source / "good1.wav"), str(source / "good2.wav")]


def test_resume_skips_complete_outputs_and_redoes_partial_ones(tmp_path: Path, expected: list[Transcript],
                                                                capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "in"
    for kind in range(4):
        write_clip(source / f"c{kind}.wav", kind)
    out = tmp_path / "out"
    formats = format_args(("text", "json", "srt", "jsonl"))
    assert transcribe(source, "--output-dir", out, *formats) == 0
    capsys.readouterr()
    before = {path: path.stat().st_ino for path in out.rglob("*.*")}
    (out / "c1.wav.srt").unlink()                     # one format missing: partial
    (out / "c2.wav.json").write_text('{"text": "the ca')  # a torn JSON (not ours: we write atomically)
    (out / ".c3.wav.txt.999.tmp").write_text("half")  # another process's leftover temporary file

    assert transcribe(source, "--output-dir", out, *formats) == 0
    assert "2 ok, 0 failed, 2 skipped" in capsys.readouterr().err
    for path in (out / "c0.wav.txt", out / "c0.wav.json", out / "c3.wav.srt"):
        assert path.stat().st_ino == before[path], f"{path} was rewritten"
    for kind in (1, 2):
        assert (out / f"c{kind}.wav.srt").read_text() == render([(str(source / f"c{kind}.wav"), expected[kind])], "srt")
        assert json.loads((out / f"c{kind}.wav.json").read_text())["text"] == expected[kind].text
    assert len((out / COMBINED_JSONL).read_text().splitlines()) == 4

    assert transcribe(source, "--output-dir", out, *formats, "--overwrite") == 0
    assert "4 ok, 0 failed, 0 skipped" in capsys.readouterr().err
    assert (out / "c0.wav.txt").stat().st_ino != before[out / "c0.wav.txt"]


def test_sigterm_stops_the_batch_as_ctrl_c_does(tmp_path: Path, expected: list[Transcript]) -> None:
    """A service manager's SIGTERM: whole outputs only, the summary printed, exit 143 (the process used to die
    of the signal with no summary)."""
    source = tmp_path / "in"
    count = 400
    for number in range(count):
        write_clip(source / f"clip{number:04d}.wav", number % 2)
    out = tmp_path / "out"
    proc = subprocess.Popen([*CLI, str(source), "--output-dir", str(out), *format_args(("json",))],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    while len(list(out.glob("*.json"))) < 20 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "(interrupted)" in err
    assert not leftovers(out)
    done = sorted(out.glob("*.json"))
    assert 20 <= len(done) < count, "the run was not interrupted midway"
    for path in done:
        assert json.loads(path.read_text())["text"] == expected[int(path.name[4:8]) % 2].text


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_an_interruption_during_a_deferred_step_comes_after_it(number: int) -> None:
    """Ctrl-C (or SIGTERM, raised as Ctrl-C by the CLIs) inside the deferred block is delivered when the block
    ends, so the block is never cut in two; the handlers in place before come back."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    steps: list[str] = []
    with sigterm_raises(KeyboardInterrupt) as terminated, pytest.raises(KeyboardInterrupt):
        with interruptions_deferred():
            signal.raise_signal(number)
            steps.append("after the signal")
        steps.append("after the block")
    assert steps == ["after the signal"]
    assert terminated.is_set() == (number == signal.SIGTERM)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_sigterm_held_with_ctrl_c_still_terminates() -> None:
    """Both signals held: SIGTERM's handler runs too (first), so the run ends as terminated, not as Ctrl-C."""
    with sigterm_raises(KeyboardInterrupt) as terminated, pytest.raises(KeyboardInterrupt), interruptions_deferred():
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)
    assert terminated.is_set()


def test_an_interrupted_batch_counts_every_output_it_wrote(tmp_path: Path) -> None:
    """Ctrl-C arriving just as an input's outputs are written: that input is counted (the summary's "ok" is the
    number of outputs written; it used to be one short when the interruption fell between the two)."""
    written: list[str] = []
    inputs = [BatchInput(index=i, name=f"c{i}", path=sample_audio_path(), output_name=PurePosixPath(f"c{i}"))
              for i in range(6)]

    def on_result(item: BatchInput, transcript: Transcript) -> None:
        written.append(item.name)
        if len(written) == 3:
            signal.raise_signal(signal.SIGINT)  # as if Ctrl-C came right after the outputs were written

    with Engine.load() as engine:
        summary = transcribe_inputs(engine, inputs, on_result=on_result,
                                    progress=Progress(len(inputs), io.StringIO(), enabled=False), workers=1)
    assert summary.interrupted
    assert summary.ok == len(written) == 3


def test_sigint_then_resume(tmp_path: Path, expected: list[Transcript]) -> None:
    """1,000 files with the progress bar drawn (stderr a terminal): SIGINT mid-run leaves only whole outputs
    (exit 130); the resumed run completes the rest, each once, and ``transcripts.jsonl`` lists every input once."""
    source = tmp_path / "in"
    count = 1000
    for number in range(count):
        write_clip(source / f"clip{number:04d}.wav", number % 2)
    out = tmp_path / "out"
    command = [*CLI, str(source), "--output-dir", str(out), *format_args(("text", "json", "jsonl"))]
    terminal, child_end = pty.openpty()
    # SIGINT as a terminal's Ctrl-C delivers it: a test run in the background (``cmd &`` in a non-interactive
    # shell) inherits SIGINT ignored, and Python then installs no KeyboardInterrupt handler in the child.
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=child_end, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    os.close(child_end)
    drawn: list[bytes] = []
    reader = threading.Thread(target=_drain, args=(terminal, drawn), daemon=True)  # the bar must not block
    reader.start()
    deadline = time.monotonic() + 300
    while len(list(out.glob("*.json"))) < 50 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    reader.join(timeout=30)
    os.close(terminal)
    err = b"".join(drawn).decode(errors="replace")
    assert proc.returncode == 130, err[-3000:]
    assert "(interrupted)" in err
    bar = [line for line in err.split("\r") if "/1000 files, " in line]
    assert bar and "files/s" in bar[-1] and "h audio/s" in bar[-1], err[-3000:]
    assert not leftovers(out)
    done = sorted(out.glob("*.json"))
    assert 50 <= len(done) < count, "the run was not interrupted midway"
    for path in done:  # every file present is whole
        number = int(path.name[4:8])
        assert json.loads(path.read_text())["text"] == expected[number % 2].text
        assert (out / path.name.replace(".json", ".txt")).read_text() == expected[number % 2].text + "\n"
    assert not (out / COMBINED_JSONL).exists()  # built only by a run that finishes

    resumed = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{count - len(done)} ok, 0 failed, {len(done)} skipped" in resumed.stderr
    assert not leftovers(out)
    for number in range(count):
        name = f"clip{number:04d}.wav"
        assert json.loads((out / f"{name}.json").read_text())["text"] == expected[number % 2].text
        assert (out / f"{name}.txt").read_text() == expected[number % 2].text + "\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [COMBINED_JSONL] + [f"clip{n:04d}.wav.{ext}" for n in range(count) for ext in ("json", "txt")])
    files = [json.loads(line)["file"] for line in (out / COMBINED_JSONL).read_text().splitlines()]
    assert files == [str(source / f"clip{n:04d}.wav") for n in range(count)]


def _drain(fd: int, into: list[bytes]) -> None:
    """Read a pseudo-terminal until its other end closes."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:  # EIO: the child closed the terminal
            return
        if not chunk:
            return
        into.append(chunk)


def test_write_atomic_leaves_the_old_file_when_interrupted(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "a.txt"
    write_atomic(target, "old\n")

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(target, "new\n")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_output_plan_for_jsonl_keeps_per_input_json(tmp_path: Path) -> None:
    plan = OutputPlan(tmp_path, ("jsonl", "srt"))
    assert plan.file_formats == ("srt", "json")
    (item,) = collect_inputs([str(write_clip(tmp_path / "in" / "x.wav", 0))])
    assert plan.paths(item) == {"srt": tmp_path / "x.wav.srt", "json": tmp_path / "x.wav.json"}


# --- progress -----------------------------------------------------------------------------------------------


def test_progress_bar() -> None:
    stream = io.StringIO()
    progress = Progress(3, stream, enabled=True)
    progress.advance(audio_seconds=3600.0)
    progress.write("parakeet-runtime: error: x")
    progress.advance(failed=True)
    progress.advance()
    progress.close()
    text = stream.getvalue()
    assert "parakeet-runtime: error: x\n" in text
    final = text.rstrip("\n").split("\r")[-1]
    assert final.startswith(f"[{'#' * 24}] 3/3 files, ") and "h audio/s" in final and final.endswith(", 1 failed")
    quiet = io.StringIO()
    off = Progress(3, quiet, enabled=False)
    off.advance()
    off.write("message")
    off.close()
    assert quiet.getvalue() == "message\n"


def test_no_progress_bar_when_stderr_is_not_a_terminal(tmp_path: Path) -> None:
    for number in range(3):
        write_clip(tmp_path / f"{number}.wav", 0)
    proc = subprocess.run([*CLI, str(tmp_path), "--output-dir", str(tmp_path / "out")], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "\r" not in proc.stderr and "files/s" not in proc.stderr
    assert proc.stderr.startswith("parakeet-runtime: 3 ok, 0 failed, 0 skipped")


# --- containers (PyAV) --------------------------------------------------------------------------------------


def _encode(path: Path, container: str, codec: str) -> None:
    av = pytest.importorskip("av", reason="the av extra is not installed")
    with av.open(str(path), "w", format=container) as output:
        stream = output.add_stream(codec, rate=RATE, layout="mono")
        frame = av.AudioFrame.from_ndarray(SAMPLE[None, :], format="s16", layout="mono")
        frame.sample_rate = RATE
        frame.pts = 0
        resampler = av.AudioResampler(format=stream.codec_context.codec.audio_formats[0].name, layout="mono",
                                      rate=RATE)
        for converted in [*resampler.resample(frame), *resampler.resample(None)]:
            for packet in stream.encode(converted):
                output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)


@pytest.mark.parametrize(("name", "container", "codec"), [("clip.m4a", "ipod", "alac"),
                                                           ("clip.mka", "matroska", "pcm_s16le")])
def test_containers_decode_through_pyav(tmp_path: Path, name: str, container: str, codec: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Lossless codecs in containers libsndfile refuses: the samples are the WAV's, so is the transcript."""
    path = tmp_path / name
    _encode(path, container, codec)
    with pytest.raises(soundfile.LibsndfileError):
        soundfile.read(path)
    reference = load_audio(sample_audio_path(), RATE).samples
    np.testing.assert_array_equal(load_audio(path, RATE).samples, reference)
    np.testing.assert_array_equal(load_audio(path.read_bytes(), RATE).samples, reference)
    assert transcribe(path) == 0
    assert capsys.readouterr().out == Engine.load().transcribe(sample_audio_path()).text + "\n"


def test_container_without_pyav_names_the_extra(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    mp4 = tmp_path / "clip.m4a"
    mp4.write_bytes(b"\x00\x00\x00\x20ftypM4A \x00\x00\x02\x00" + bytes(64))
    monkeypatch.setitem(sys.modules, "av", None)  # import av raises ImportError
    with pytest.raises(AudioDecodeError, match=r"MP4/M4A container: install PyAV") as raised:
        load_audio(mp4, RATE)
    assert AV_EXTRA_HINT in str(raised.value) and "parakeet-runtime[av]" in str(raised.value)
    with pytest.raises(AudioDecodeError) as plain:  # not a container: soundfile's refusal, unchanged
        load_audio(b"nope", RATE)
    assert "PyAV" not in str(plain.value)


def test_container_kinds() -> None:
    assert container_kind(b"\x00\x00\x00\x18ftypmp42") == "MP4/M4A"
    assert container_kind(b"\x1a\x45\xdf\xa3\x01") == "Matroska/WebM"
    assert container_kind(b"\xff\xf1\x50\x80") == "AAC (ADTS)"
    assert container_kind(b"\xff\xfb\x90\x00") is None  # MP3 frame sync: libsndfile's business
    assert container_kind(b"RIFF\x00\x00\x00\x00WAVE") is None


# --- findings of a batch-CLI probe (2026-12-02) ---------------------------------------------------------------


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_an_input_blocked_on_a_fifo_does_not_hold_an_interruption(tmp_path: Path, number: int) -> None:
    """A FIFO nothing writes to blocks its reader: Ctrl-C and SIGTERM then waited for it forever (only SIGKILL
    ended the run). Now the run stops, prints its summary and exits 130 or 143."""
    fifo = tmp_path / "fifo.wav"
    os.mkfifo(fifo)
    write_clip(tmp_path / "clip.wav", 0)
    out = tmp_path / "out"
    proc = subprocess.Popen([*CLI, str(fifo), str(tmp_path / "clip.wav"), "--output-dir", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "clip.wav.txt").exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run ended without the FIFO"
    proc.send_signal(number)
    try:
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + number, err[-2000:]
    assert "1 ok, 0 failed" in err and "(interrupted)" in err


def test_a_closed_standard_input_fails_only_the_input_that_reads_it(tmp_path: Path) -> None:
    """With no standard input (closed: ``<&-``, some daemons) every run raised AttributeError, ``-`` or not."""
    clip = write_clip(tmp_path / "a.wav", 0)
    proc = subprocess.run([*CLI, str(clip), "-", "--output-dir", str(tmp_path / "out")], stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=120, preexec_fn=lambda: os.close(0))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "cannot read standard input: the process has none" in proc.stderr
    assert (tmp_path / "out" / "a.wav.txt").exists()


def test_an_interrupted_run_to_stdout_keeps_the_finished_transcripts(tmp_path: Path) -> None:
    """Without ``--output-dir`` an interruption printed nothing at all (no transcripts, no summary)."""
    source = tmp_path / "in"
    for number in range(20):
        write_clip(source / f"clip{number:04d}.wav", 3)
    fifo = tmp_path / "never.wav"
    os.mkfifo(fifo)  # nothing writes to it: the run cannot finish before it is interrupted, whatever the CPU
    proc = subprocess.Popen([*CLI, str(source), str(fifo), "--format", "jsonl"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    time.sleep(15)  # the model loaded and the clips done (a second or two here)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    done = [json.loads(line) for line in out.splitlines() if line.strip()]
    assert 0 < len(done) <= 20 and "(interrupted)" in err and f"{len(done)} ok" in err


def test_a_manifest_with_a_byte_order_mark_is_read_past_it(tmp_path: Path) -> None:
    write_clip(tmp_path / "a.wav", 0)
    manifest = tmp_path / "list.txt"
    manifest.write_bytes(b"\xef\xbb\xbfa.wav\n")
    assert transcribe("--manifest", manifest, "--output-dir", tmp_path / "out") == 0
    assert (tmp_path / "out" / "a.wav.txt").exists()


def test_an_output_name_near_the_file_system_limit_is_written(tmp_path: Path) -> None:
    """The temporary file was named after the output plus 11 bytes: outputs of 245 bytes or more failed with
    'File name too long'."""
    name = "n" * 240 + ".wav"  # the .txt output: 248 bytes
    write_clip(tmp_path / name, 0)
    assert transcribe(tmp_path / name, "--output-dir", tmp_path / "out") == 0
    assert (tmp_path / "out" / f"{name}.txt").exists() and not leftovers(tmp_path / "out")


def test_partial_outputs_of_a_failed_input_are_removed(tmp_path: Path) -> None:
    """A long input that delivered segments and then failed kept its ``.partial`` files beside the outputs."""
    from typing import Any

    from parakeet_runtime.engine import BatchingOptions
    from parakeet_runtime.engine.results import TimedText, TranscriptUpdate
    from parakeet_runtime.engine.serving.batch import OutputPlan, PartialWriter, transcribe_inputs
    from parakeet_runtime.engine.serving.inputs import collect_inputs
    from parakeet_runtime.engine.serving.progress import Progress

    class FailingHalfway:
        batching = BatchingOptions(max_batch_size=1)

        def transcribe_iter(self, source: object, progress: object = None) -> Iterator[TranscriptUpdate]:
            words = (TimedText("hello", 0, 4, 0.0, 0.3), TimedText("world", 5, 10, 0.4, 0.8))
            yield TranscriptUpdate(words=words, segments=(TimedText("hello world", 0, 10, 0.0, 0.8),),
                                   processed=60.0, duration=120.0)
            raise OSError("a read error in the second half")

        def close(self) -> None:
            pass

    audio = tmp_path / "in.wav"
    audio.write_bytes(b"x")
    plan = OutputPlan(tmp_path / "out", ("text", "srt", "vtt"))
    partials = PartialWriter(plan)
    written: list[str] = []

    def update(item: Any, update: Any, state: dict[str, object]) -> None:
        partials.update(item, update, state)
        written.extend(sorted(p.name for p in (tmp_path / "out").iterdir()))

    summary = transcribe_inputs(FailingHalfway(), collect_inputs([str(audio)]),  # type: ignore[arg-type]
                                on_result=lambda item, transcript: None, on_update=update,
                                progress=Progress(1, sys.stderr, enabled=False), on_failure=partials.discard)
    assert summary.failed == 1 and any(name.endswith(".partial") for name in written)
    assert list((tmp_path / "out").iterdir()) == []


def test_inputs_after_an_option_are_inputs_and_an_empty_manifest_is_an_error(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``transcribe a.wav --format json b.wav`` stopped at "unrecognized arguments: b.wav"; an empty manifest ran
    nothing and exited 0 (a glob or a directory with nothing in it exits 2)."""
    first, second = write_clip(tmp_path / "a.wav", 0), write_clip(tmp_path / "b.wav", 1)
    assert transcribe(first, "--format", "json", second, "--output-dir", tmp_path / "out") == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.wav.json", "b.wav.json"]
    with pytest.raises(SystemExit) as exited:
        transcribe(first, "--no-such-option", second)
    assert exited.value.code == 2
    from parakeet_runtime.engine.serving.cli import parse_args

    assert parse_args(["transcribe", "a.wav", "--format", "json", "--", "-x.wav", "b.wav"]).inputs == [
        "a.wav", "-x.wav", "b.wav"]  # after `--`, names starting with a dash are inputs too
    empty = tmp_path / "empty.txt"
    empty.write_text("# nothing yet\n\n")
    capsys.readouterr()
    assert transcribe("--manifest", empty) == 2
    assert "the manifest lists no audio files" in capsys.readouterr().err
