"""Inputs of any length: the plan of windows, the chunked search (one search across chunk borders), the choice
between one pass and chunks, and the streaming call.

How well chunked results agree with one pass is a property of the model (how much its encoder output depends on
context far away); the figures for the models at hand are in benchmarks/README.md ("Long recordings"). What is
exact, and tested here: a chunked transcription whose windows see the whole input equals one pass; and the
search over the kept frames of many windows, given one pass's encoder frames, equals one pass's search.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import pytest
import soundfile

from parakeet_runtime.engine import (
    AudioTooLongError,
    BatchingOptions,
    Engine,
    LongAudio,
    LongFormOptions,
    PreparedAudio,
    Transcript,
    sample_audio_path,
)
from parakeet_runtime.engine.requests.longform import ChunkGroup, ChunkOutcome, plan_windows

FRAME = 1280


# --- the plan ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("total", [1, 1279, 1280, 1281, 12_800, 50_000, 1_000_003])
@pytest.mark.parametrize(("chunk", "left", "right"), [(1280, 0, 0), (6400, 2560, 1280), (12_800, 0, 3840),
                                                      (25_600, 12_800, 12_800)])
def test_windows_cover_the_input_once(total: int, chunk: int, left: int, right: int) -> None:
    windows = plan_windows(total, FRAME, chunk, left, right)
    assert windows[0].start == 0 and windows[0].skip == 0 and windows[0].first_frame == 0
    assert windows[-1].end == total and windows[-1].keep is None
    expected_frame = 0
    for window in windows:
        assert window.first_frame == expected_frame  # chunks follow each other without gap or overlap
        assert window.start == window.first_frame * FRAME - window.skip * FRAME >= 0
        assert window.skip * FRAME <= left
        assert window.end - window.start <= left + chunk + right
        if window.keep is not None:
            assert window.keep * FRAME == chunk
            assert window.end == (window.first_frame + window.keep) * FRAME + right  # its full right context
            expected_frame += window.keep
    assert all(w.keep is not None for w in windows[:-1])


def test_bad_geometry_is_refused() -> None:
    with pytest.raises(ValueError, match="whole encoder frames"):
        plan_windows(10_000, FRAME, 1000, 0, 0)
    with pytest.raises(ValueError, match="whole encoder frames"):
        plan_windows(10_000, FRAME, 1280, 100, 0)
    for bad in ({"chunk_seconds": 0}, {"left_context_seconds": -1}, {"memory_budget": 0},
                {"strategy": "fast"}, {"max_audio_seconds": 0},
                # infinite or enormous windows raised OverflowError at load; a NaN budget chose chunks always
                {"chunk_seconds": float("inf")}, {"left_context_seconds": 1e308},
                {"right_context_seconds": float("nan")},
                {"memory_budget": float("nan")}, {"memory_budget": float("inf")}, {"max_audio_seconds": float("nan")}):
        with pytest.raises(ValueError):
            LongFormOptions(**bad)


# --- exactness of the machinery ----------------------------------------------------------------------------


def _speech(clips: dict[str, Path]) -> npt.NDArray[np.float32]:
    parts = [soundfile.read(clips[name], dtype="float32")[0] for name in ("c3_multi", "c2_sentence", "c5_noisy")]
    pause = np.zeros(4000, dtype=np.float32)
    return np.concatenate([p for part in parts for p in (part, pause)]).astype(np.float32)


MODELS = ["tdt_a", "tdt_b", "tdt_a_skip", "tdt_a_maxsym", "tdt_a_dur0"]


def _same(a: Transcript, b: Transcript) -> None:
    assert [(t.id, t.frame, t.duration) for t in a.tokens] == [(t.id, t.frame, t.duration) for t in b.tokens]
    assert a.words == b.words and a.segments == b.segments and a.text == b.text


@pytest.mark.parametrize("model", MODELS)
def test_a_window_that_sees_everything_is_one_pass(converted: dict[str, Path], clips: dict[str, Path],
                                                  model: str) -> None:
    audio = _speech(clips)
    one = Engine.load(converted[model], long_form=LongFormOptions(strategy="one_pass")).transcribe(audio)
    options = LongFormOptions(strategy="chunked", chunk_seconds=3, left_context_seconds=0, right_context_seconds=60)
    chunked = Engine.load(converted[model], long_form=options).transcribe(audio)
    assert one.strategy == "one_pass" and chunked.strategy == "chunked"
    assert len(one.tokens) > 5
    _same(one, chunked)


FEATURE_VARIANTS: dict[str, dict[str, Any]] = {
    "model": {}, "exact_pad": {"exact_pad": True}, "no_preemphasis": {"preemph": None},
    "all_features": {"normalize": "all_features"}, "no_normalisation": {"normalize": "none"},
    "magnitude": {"mag_power": 1.0, "log_zero_guard_type": "clamp"},
}


@pytest.mark.parametrize("variant", sorted(FEATURE_VARIANTS))
@pytest.mark.parametrize("block_frames", [1, 7, 500])
def test_long_features_are_one_pass_features(converted: dict[str, Path], variant: str, block_frames: int) -> None:
    """A long input's features, computed block by block and normalised in groups of rows, are bit-identical to
    the features of the whole signal at once (blocks far smaller than a real one, so edges are everywhere)."""
    extractor = Engine.load(converted["tdt_a"]).preparer.features
    extractor = dataclasses.replace(extractor, spec=dataclasses.replace(extractor.spec, **FEATURE_VARIANTS[variant]))
    rng = np.random.default_rng(block_frames)
    signal = (0.1 * rng.standard_normal(2 * 16_000 + 77)).astype(np.float32)
    signal[8000:20_000] = 0.0  # digital silence inside: rows whose statistics are ill-conditioned
    whole, valid = extractor(signal)
    blocks, blocks_valid = extractor.long_features(signal, block_frames=block_frames)
    assert blocks_valid == valid and blocks.shape == whole.shape
    np.testing.assert_array_equal(blocks, whole)


@pytest.mark.parametrize("variant", sorted(FEATURE_VARIANTS))
def test_a_signal_shorter_than_a_frame_has_no_valid_frame(converted: dict[str, Path], variant: str) -> None:
    """Fewer samples than a hop: no valid frame under every normalisation (``all_features`` used to divide by
    zero), and the engine gives an empty transcript."""
    engine = Engine.load(converted["tdt_a"])
    extractor = engine.preparer.features
    extractor = dataclasses.replace(extractor, spec=dataclasses.replace(extractor.spec, **FEATURE_VARIANTS[variant]))
    features, valid = extractor(np.full(100, 0.1, dtype=np.float32))
    assert valid == 0 and features.shape[0] == extractor.spec.n_mels
    assert engine.transcribe(np.full(100, 0.1, dtype=np.float32)).text == ""


@pytest.mark.parametrize("model", ["tdt_a", "tdt_b"])
def test_windows_get_one_pass_features(converted: dict[str, Path], clips: dict[str, Path], model: str) -> None:
    """Every window of a chunked input is given one pass's features of its samples (normalised over the whole
    input, not over the window as NeMo's buffered script does), and the padding frame a window alone has."""
    options = LongFormOptions(strategy="chunked", chunk_seconds=2, left_context_seconds=1, right_context_seconds=1)
    engine = Engine.load(converted[model], long_form=options)
    audio = _speech(clips)
    prepared = engine.prepare(audio)
    assert isinstance(prepared, LongAudio) and len(prepared.windows) > 3
    whole, valid = engine.preparer.features(audio)
    assert prepared.feature_frames == valid
    np.testing.assert_array_equal(prepared.features, whole)
    spec = engine.manifest.features
    for window in prepared.windows:
        features, frames = engine.preparer.window_features(prepared, window)
        alone, alone_frames = engine.preparer.features(audio[window.start : window.end])
        assert frames == alone_frames and features.shape == alone.shape
        first = window.start // spec.hop_length
        np.testing.assert_array_equal(features[:, :frames], whole[:, first : first + frames])
        assert np.all(features[:, frames:] == spec.pad_value)


class _OnePassFrames:
    """The engine's step model, whose ``encode`` gives each window the frames one pass gave its samples: the
    chunked search then sees exactly one pass's encoder output, window by window."""

    def __init__(self, model: Any, frames: npt.NDArray[np.float32], frame_samples: int) -> None:
        self._model = model
        self._frames = frames
        self._frame_samples = frame_samples
        self.windows: tuple[Any, ...] = ()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def encode(self, features: Any, lengths: Any) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.int64]]:
        rows = []
        counts = []
        for window in self.windows:
            start = window.first_frame - window.skip
            end = min(self._frames.shape[0], -(-window.end // self._frame_samples))
            rows.append(self._frames[start:end])
            counts.append(end - start)
        width = max(counts)
        out = np.zeros((len(rows), width, self._frames.shape[1]), dtype=np.float32)
        for i, row in enumerate(rows):
            out[i, : row.shape[0]] = row
        return out, np.asarray(counts, dtype=np.int64)


@pytest.mark.parametrize("model", MODELS)
def test_the_search_runs_on_across_chunk_borders(converted: dict[str, Path], clips: dict[str, Path],
                                                 model: str) -> None:
    """Given one pass's encoder frames, the chunked search over many windows (groups of several, the carry
    passed from group to group, durations running past chunk ends) gives one pass's tokens exactly."""
    engine = Engine.load(converted[model], batching=BatchingOptions(enabled=False))
    audio = _speech(clips)
    prepared = engine.prepare(audio)
    assert isinstance(prepared, PreparedAudio)
    frames, lengths = engine.inference.encode_batch([prepared])
    one = engine.inference.decode_batch(frames, lengths, [prepared])[0]
    frame = engine.preparer.geometry.frame_samples  # samples per encoder frame: hop × subsampling
    proxy = _OnePassFrames(engine.model, frames[0, : int(lengths[0])], frame)
    inference = dataclasses.replace(engine.inference, model=proxy)  # type: ignore[arg-type]
    for chunk_frames in (1, 3, 7, 40):
        windows = plan_windows(audio.shape[0], frame, chunk_frames * frame, 2 * frame, frame)
        tokens: list[Any] = []
        carry = None
        for start in range(0, len(windows), 3):
            group = windows[start : start + 3]
            proxy.windows = tuple(group)
            features = tuple(np.zeros((1, 1), np.float32) for _ in group)
            outcome = inference.decode_chunks(ChunkGroup(features, tuple(1 for _ in group), tuple(group), carry))
            assert isinstance(outcome, ChunkOutcome)
            tokens += outcome.tokens
            carry = outcome.carry
        chunked = engine.inference.transcripts(tokens, one.duration)
        assert [(t.id, t.frame, t.duration) for t in chunked.tokens] == [
            (t.id, t.frame, t.duration) for t in one.tokens], f"chunks of {chunk_frames} frames"
        assert chunked.words == one.words
    assert len(one.tokens) > 5


# --- the engine's choice, the streaming call, every entry point ---------------------------------------------


@pytest.fixture(scope="module")
def long_audio() -> npt.NDArray[np.float32]:
    sample, rate = soundfile.read(sample_audio_path(), dtype="float32")
    pause = np.zeros(rate // 2, dtype=np.float32)
    return np.concatenate([np.concatenate([sample, pause])] * 14).astype(np.float32)  # about 70 s


@pytest.fixture(scope="module")
def chunked_engine() -> Iterator[Engine]:
    options = LongFormOptions(chunk_seconds=10, left_context_seconds=4, right_context_seconds=2, memory_budget=1)
    with Engine.load(long_form=options) as engine:
        yield engine


def test_the_engine_chooses_by_the_memory_budget(long_audio: npt.NDArray[np.float32]) -> None:
    with Engine.load() as roomy:
        assert isinstance(roomy.prepare(long_audio), PreparedAudio)
        assert roomy.transcribe(long_audio).strategy == "one_pass"
    with Engine.load(long_form=LongFormOptions(memory_budget=50 << 20)) as tight:
        assert isinstance(tight.prepare(long_audio), LongAudio)
        assert isinstance(tight.prepare(long_audio[:16000]), PreparedAudio)
        assert tight.transcribe(long_audio).strategy == "chunked"
    # the user's limit is named as such (it said "longer than this model's encoder takes in one pass")
    with Engine.load(long_form=LongFormOptions(max_audio_seconds=30)) as limited, \
            pytest.raises(AudioTooLongError, match=r"longer than the 30 s accepted \(LongFormOptions"):
        limited.transcribe(long_audio)


@pytest.mark.parametrize(("forced", "expected"), [("auto", "one_pass"), ("one_pass", "one_pass"),
                                                  ("chunked", "chunked")])
def test_empty_audio_records_the_strategy_asked_for(forced: Literal["auto", "one_pass", "chunked"],
                                                   expected: Literal["one_pass", "chunked"]) -> None:
    """Empty audio runs nothing either way: its transcript records the strategy the options chose (a forced
    ``chunked`` used to be reported as ``one_pass``), alike from every entry point."""
    empty = np.zeros(0, dtype=np.float32)
    with Engine.load(long_form=LongFormOptions(strategy=forced)) as engine:
        results = [engine.transcribe(empty), *engine.transcribe([empty, empty]),
                   asyncio.run(engine.transcribe_async(empty))]
        updates = list(engine.transcribe_iter(empty))
        assert len(updates) == 1 and updates[0].transcript is not None
        results.append(updates[0].transcript)
    assert all(r == Transcript(text="", duration=0.0, strategy=expected) for r in results)
    assert results[0].to_dict()["strategy"] == expected


@pytest.mark.parametrize("hops", [0.01, 0.99, 1.0, 1.01, 2.0])
def test_forced_chunking_of_less_than_a_window_is_one_pass(converted: dict[str, Path], hops: float) -> None:
    """Found in review: a forced ``chunked`` input of fewer samples than a hop has no valid feature frame, yet its
    window was encoded (an encoder makes one frame of a length of 0) and decoded into an invented token; one pass
    (and NeMo) give nothing. Now both give what one pass gives, tokens and frames alike."""
    windows = LongFormOptions(chunk_seconds=1.0, left_context_seconds=0.5, right_context_seconds=0.5)
    with Engine.load(converted["tdt_a"], long_form=dataclasses.replace(windows, strategy="chunked")) as chunked, \
            Engine.load(converted["tdt_a"], long_form=dataclasses.replace(windows, strategy="one_pass")) as one_pass:
        spec = chunked.manifest.features
        samples = max(1, round(hops * spec.hop_length))
        signal = (np.random.default_rng(samples).standard_normal(samples) * 0.1).astype(np.float32)
        got, expected = chunked.transcribe(signal), one_pass.transcribe(signal)
    assert [(t.id, t.frame, t.duration) for t in got.tokens] == [(t.id, t.frame, t.duration) for t in expected.tokens]
    assert got.text == expected.text
    if samples < spec.hop_length:
        assert got == Transcript(text="", duration=samples / spec.sample_rate, strategy="chunked")


def test_a_chunked_transcript_is_well_formed(chunked_engine: Engine, long_audio: npt.NDArray[np.float32]) -> None:
    transcript = chunked_engine.transcribe(long_audio)
    assert transcript.strategy == "chunked"
    assert transcript.duration == pytest.approx(long_audio.shape[0] / 16000)
    assert len(transcript.words) > 50
    starts = [w.start for w in transcript.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= transcript.duration for w in transcript.words)
    frames = [t.frame for t in transcript.tokens]
    assert frames == sorted(frames)
    assert transcript.words[-1].end > transcript.duration - 8  # words reach the last chunk


def test_transcribe_iter_streams_what_transcribe_gives(chunked_engine: Engine,
                                                       long_audio: npt.NDArray[np.float32]) -> None:
    seen: list[tuple[float, float]] = []
    updates = list(chunked_engine.transcribe_iter(long_audio, progress=lambda done, total: seen.append((done, total))))
    whole = chunked_engine.transcribe(long_audio)
    assert len(updates) >= 2  # 70 s in 10 s chunks, four windows a group
    assert updates[-1].transcript == whole
    assert all(u.transcript is None for u in updates[:-1])
    assert tuple(w for u in updates for w in u.words) == whole.words
    assert tuple(s for u in updates for s in u.segments) == whole.segments
    assert sum(len(u.words) > 0 for u in updates[:-1]) >= 1  # words arrive before the end
    done = [u.processed for u in updates]
    assert done == sorted(done) and done[-1] == whole.duration and done[0] < whole.duration
    assert seen == [(u.processed, u.duration) for u in updates]
    # An input that runs in one pass: one update with everything.
    short = list(chunked_engine.transcribe_iter(sample_audio_path()))
    assert len(short) == 1 and short[0].transcript is not None and short[0].transcript.strategy == "one_pass"


def test_each_update_comes_as_soon_as_its_chunk_group_is_done(chunked_engine: Engine,
                                                              long_audio: npt.NDArray[np.float32],
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Update n is handed out when group n is done, not after group n + 1 was run too (a long file's first
    words and its progress bar came a whole group late, and a close() between updates did not stop the next)."""
    runner = chunked_engine.runner
    submitted: list[int] = []
    real_submit = runner.submit_many

    def counting(items: Any, **kwargs: Any) -> Any:
        submitted.append(len(items))
        return real_submit(items, **kwargs)

    monkeypatch.setattr(runner, "submit_many", counting)
    groups_at_update = [len(submitted) for _ in chunked_engine.transcribe_iter(long_audio)]
    assert len(groups_at_update) >= 2
    assert groups_at_update == list(range(1, len(groups_at_update) + 1))


def test_every_entry_point_takes_long_inputs(chunked_engine: Engine, long_audio: npt.NDArray[np.float32]) -> None:
    whole = chunked_engine.transcribe(long_audio)
    listed = chunked_engine.transcribe([sample_audio_path(), long_audio, long_audio[:16000]])
    assert listed[1] == whole
    assert listed[0] == chunked_engine.transcribe(sample_audio_path())
    assert asyncio.run(chunked_engine.transcribe_async(long_audio)) == whole
    assert asyncio.run(chunked_engine.transcribe_async([long_audio, sample_audio_path()]))[0] == whole
    with Engine.load(batching=BatchingOptions(enabled=False), long_form=chunked_engine.preparer.long_form) as inline:
        assert inline.transcribe(long_audio) == whole


def test_a_cancelled_async_long_request_stops_between_chunk_groups(long_audio: npt.NDArray[np.float32],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A server's client that disconnects cancels its ``transcribe_async``; the executor thread running the long
    input then stops before its next chunk group instead of transcribing the rest for nobody."""
    import threading
    import time

    options = LongFormOptions(chunk_seconds=5, left_context_seconds=2, right_context_seconds=1, memory_budget=1)
    with Engine.load(long_form=options, batching=BatchingOptions(max_batch_size=1)) as engine:
        calls: list[float] = []
        first = threading.Event()
        original = Engine._window_features

        def slow(self: Engine, long: Any, windows: Any) -> Any:
            calls.append(time.monotonic())
            first.set()
            time.sleep(0.3)
            return original(self, long, windows)

        monkeypatch.setattr(Engine, "_window_features", slow)

        async def cancel_early() -> None:
            task = asyncio.ensure_future(engine.transcribe_async(long_audio))
            await asyncio.get_running_loop().run_in_executor(None, first.wait, 10.0)
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

        asyncio.run(cancel_early())
        time.sleep(1.5)  # what an abandoned thread would still do shows here
        groups = -(-long_audio.shape[0] // (5 * 16000))
        assert groups >= 12 and 1 <= len(calls) <= 3, (groups, len(calls))


# --- the CLI on a long file ----------------------------------------------------------------------------------


def test_the_cli_writes_a_long_file_as_it_goes(chunked_engine: Engine, long_audio: npt.NDArray[np.float32],
                                                tmp_path: Path) -> None:
    """Each update's segments are appended to NAME.partial (text, SRT, VTT) while the file runs; at the end the
    complete outputs replace them, and what was written as it went is the start of the complete file."""
    from parakeet_runtime.engine.serving.batch import OutputPlan, PartialWriter
    from parakeet_runtime.engine.serving.cli import main
    from parakeet_runtime.engine.serving.formats import to_srt, to_vtt
    from parakeet_runtime.engine.serving.inputs import collect_inputs

    path = tmp_path / "meeting.wav"
    soundfile.write(path, long_audio, 16000)
    plan = OutputPlan(tmp_path / "partial", ("text", "srt", "vtt", "json"))
    (item,) = collect_inputs([str(path)], [], unique=True)
    writer = PartialWriter(plan)
    state: dict[str, object] = {}
    whole = None
    for update in chunked_engine.transcribe_iter(path):
        writer.update(item, update, state)
        whole = update.transcript or whole
    assert whole is not None and whole.strategy == "chunked" and len(whole.segments) >= 1
    paths = plan.paths(item)
    written = {fmt: writer.partial_path(paths[fmt]) for fmt in ("srt", "vtt", "text")}
    if len(whole.segments) > 1:  # segments became final before the end: they were written as they came
        assert to_srt(whole).startswith(written["srt"].read_text(encoding="utf-8").rstrip("\n"))
        assert to_vtt(whole).startswith(written["vtt"].read_text(encoding="utf-8").rstrip("\n"))
    assert not (tmp_path / "partial" / "meeting.wav.json").exists()  # JSON only at the end

    out = tmp_path / "out"
    code = main(["transcribe", str(path), "--output-dir", str(out), "--format", "srt", "--format", "json",
                 "--strategy", "chunked", "--chunk-s", "10"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["meeting.wav.json", "meeting.wav.srt"]  # no .partial left
    options = LongFormOptions(strategy="chunked", chunk_seconds=10)
    with Engine.load(long_form=options) as engine:
        expected = engine.transcribe(path)
    assert (out / "meeting.wav.srt").read_text(encoding="utf-8") == to_srt(expected)
    assert json.loads((out / "meeting.wav.json").read_text(encoding="utf-8"))["strategy"] == "chunked"


# --- the memory budget bounds a batch of one-pass inputs ----------------------------------------------------


def test_buckets_keep_a_batch_within_the_memory_budget() -> None:
    from parakeet_runtime.engine.requests.buckets import length_buckets

    order, frames, memory = [0, 1, 2, 3, 4], [100, 100, 100, 100, 140], [40, 40, 40, 40, 90]
    options = BatchingOptions()
    assert length_buckets(order, frames, options, 0.01) == [order]
    assert length_buckets(order, frames, options, 0.01, memory=memory, memory_budget=100) == [[0, 1], [2, 3], [4]]
    assert length_buckets(order, frames, options, 0.01, memory=memory, memory_budget=80) == [[0, 1], [2, 3], [4]]
    assert length_buckets(order, frames, options, 0.01, memory=memory, memory_budget=79) == [[0], [1], [2], [3], [4]]


def test_concurrent_one_pass_inputs_are_batched_within_the_memory_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    """Inputs that each fit the budget in one pass were padded into one encoder batch whatever their sum (two
    5-minute inputs of the v2 shape: 2 × 4.1 GB estimated against a 24 GB machine's 6.3 GB budget; four of 2.5
    minutes, 4 × 1.6 GB, on an 8 GB machine's 2 GB); now a batch holds only as many as its estimate allows, and
    the transcripts are the same."""
    sample, _ = soundfile.read(sample_audio_path(), dtype="float32")
    clip = np.tile(sample, 4).astype(np.float32)  # about 20 s: one window, so always one pass
    with Engine.load(batching=BatchingOptions(enabled=False)) as unbounded:
        expected = unbounded.transcribe([clip, clip, clip])
        estimate = unbounded.preparer.encoder_bytes(clip.shape[0])
        assert unbounded.prepare(clip).encoder_bytes == estimate > 0  # type: ignore[union-attr]
    with Engine.load(batching=BatchingOptions(enabled=False),
                     long_form=LongFormOptions(memory_budget=int(2.5 * estimate))) as bounded:
        batches: list[int] = []
        model_class = type(bounded.model)
        encode = model_class.encode

        def recording(self: Any, features: Any, lengths: Any) -> Any:
            batches.append(int(features.shape[0]))
            return encode(self, features, lengths)

        monkeypatch.setattr(model_class, "encode", recording)
        assert bounded.transcribe([clip, clip, clip]) == expected
        assert batches == [2, 1]
        assert bounded.transcribe(clip).strategy == "one_pass"
