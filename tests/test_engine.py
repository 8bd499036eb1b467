"""The engine on the bundled default model: inputs, edge cases, typed errors, list in / list out.

These tests need only the runtime dependencies (no NeMo): they run on the model shipped in the package.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import (
    AudioDecodeError,
    AudioFileNotFoundError,
    AudioInput,
    AudioTooLongError,
    Engine,
    EngineClosedError,
    LongFormOptions,
    ManifestError,
    ModelDirectoryError,
    ParakeetRuntimeError,
    Transcript,
    default_model_dir,
    load_audio,
    sample_audio_path,
)
from tests.invariants import check_invariants


@pytest.fixture(scope="module")
def engine() -> Engine:
    return Engine.load()


def test_default_model_transcribes_the_sample(engine: Engine) -> None:
    result = engine.transcribe(sample_audio_path())
    assert isinstance(result, Transcript)
    assert result.text.strip()
    assert result.words and result.segments and result.tokens
    check_invariants(result)


def test_path_bytes_and_array_give_the_same_transcript(engine: Engine) -> None:
    path = sample_audio_path()
    from_path = engine.transcribe(path)
    assert engine.transcribe(str(path)) == from_path
    assert engine.transcribe(path.read_bytes()) == from_path
    samples, rate = soundfile.read(path, dtype="float32")
    assert engine.transcribe(samples) == from_path
    assert engine.transcribe((samples, rate)) == from_path
    pcm, _ = soundfile.read(path, dtype="int16")
    assert engine.transcribe(pcm) == from_path


def test_resampled_and_stereo_input_still_transcribes(engine: Engine, tmp_path: Path) -> None:
    samples, rate = soundfile.read(sample_audio_path(), dtype="float32")
    reference = engine.transcribe(samples)
    stereo = np.stack([samples, samples], axis=1)
    assert engine.transcribe((stereo, rate)) == reference  # identical channels average to the same signal
    path = tmp_path / "s44.flac"
    soundfile.write(path, load_audio((samples, rate), 44100).samples, 44100, subtype="PCM_24")
    result = engine.transcribe(path)
    check_invariants(result)
    assert result.text.strip()


def test_list_in_list_out(engine: Engine) -> None:
    path = sample_audio_path()
    single = engine.transcribe(path)
    results = engine.transcribe([path, np.zeros(0, dtype=np.float32), path])
    assert isinstance(results, list) and len(results) == 3
    assert results[0] == single and results[2] == single
    assert results[1].text == "" and results[1].tokens == ()
    assert engine.transcribe([]) == []


def test_a_bad_array_in_a_list_is_named_by_its_position(engine: Engine) -> None:
    """A path names itself in its error; an array has no name, so the error says where it is in the list
    (sync and async alike)."""
    import asyncio

    inputs: list[AudioInput] = [sample_audio_path(), np.zeros(1600, dtype=np.float32),
                                np.full(100, np.nan, dtype=np.float32)]
    with pytest.raises(AudioDecodeError, match=r"^list item 2: .*NaN"):
        engine.transcribe(inputs)
    with pytest.raises(AudioDecodeError, match=r"^list item 2: .*NaN"):
        asyncio.run(engine.transcribe_async(inputs))
    with pytest.raises(AudioFileNotFoundError, match=r"^audio file not found: .*missing\.wav"):
        engine.transcribe([sample_audio_path(), "missing.wav"])


@pytest.mark.parametrize("n", [0, 1, 100, 159, 160, 161, 799, 1280, 4001])
def test_empty_and_very_short_audio(engine: Engine, n: int) -> None:
    rng = np.random.default_rng(n)
    result = engine.transcribe((rng.standard_normal(n) * 0.05).astype(np.float32))
    assert result.duration == pytest.approx(n / engine.sample_rate)
    check_invariants(result)


@pytest.mark.parametrize("seconds", [0.5, 3.0, 10.0])
def test_silence(engine: Engine, seconds: float) -> None:
    result = engine.transcribe(np.zeros(int(seconds * engine.sample_rate), dtype=np.float32))
    check_invariants(result)
    assert result.duration == pytest.approx(seconds)


def test_too_long_audio_is_a_typed_error() -> None:
    """No length limit but the user's: ``LongFormOptions.max_audio_seconds``, a typed error before decoding."""
    with Engine.load(long_form=LongFormOptions(max_audio_seconds=30)) as limited:
        with pytest.raises(AudioTooLongError, match="longer than"):
            limited.transcribe(np.zeros(int(35 * limited.sample_rate), dtype=np.float32))
        assert limited.transcribe(np.zeros(int(30 * limited.sample_rate), dtype=np.float32)).duration == 30.0


def test_warm_up_runs_the_request_path_and_changes_no_result(engine: Engine) -> None:
    """``warm_up`` runs silence of the length (and batch) asked through ``transcribe`` and returns the time taken;
    results afterwards are the same; bad arguments and limits are typed errors before anything runs."""
    before = engine.transcribe(sample_audio_path())
    took = engine.warm_up(2.5, batch=3)
    assert took > 0.0
    assert engine.transcribe(sample_audio_path()) == before
    for seconds in (0, -1.0, float("nan"), float("inf"), True, "3"):
        with pytest.raises(ValueError, match="seconds"):
            engine.warm_up(seconds)  # type: ignore[arg-type]
    for batch in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="batch"):
            engine.warm_up(1.0, batch=batch)  # type: ignore[arg-type]
    with Engine.load(long_form=LongFormOptions(max_audio_seconds=5)) as limited:
        with pytest.raises(AudioTooLongError):
            limited.warm_up(6.0)
        assert limited.warm_up(4.0) > 0.0
    closed = Engine.load()
    closed.close()
    with pytest.raises(EngineClosedError):
        closed.warm_up(1.0)


def test_warm_up_sends_its_silence_through_transcribe(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """What ``warm_up`` submits: ``batch`` arrays of ``round(seconds × rate)`` zeros, as one list."""
    seen: list[list[np.ndarray]] = []

    def record(self: Engine, audio: list[np.ndarray], **kwargs: object) -> list[Transcript]:
        seen.append(audio)
        return []

    monkeypatch.setattr(Engine, "transcribe", record)
    engine.warm_up(1.25, batch=2)
    assert len(seen) == 1 and len(seen[0]) == 2
    for array in seen[0]:
        assert array.dtype == np.float32 and array.shape == (round(1.25 * engine.sample_rate),) and not array.any()


def test_bad_inputs_are_typed_and_the_engine_keeps_working(engine: Engine, tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"not audio" * 100)
    with pytest.raises(AudioFileNotFoundError):
        engine.transcribe(tmp_path / "missing.flac")
    with pytest.raises(AudioDecodeError, match=r"garbage\.wav"):
        engine.transcribe(garbage)
    with pytest.raises(AudioDecodeError):
        engine.transcribe(np.array(["x"]))
    with pytest.raises(AudioDecodeError):
        engine.transcribe([sample_audio_path(), garbage])
    assert engine.transcribe(sample_audio_path()).text.strip()


def test_results_are_immutable(engine: Engine) -> None:
    result = engine.transcribe(sample_audio_path())
    with pytest.raises(AttributeError):
        result.text = "changed"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        result.tokens[0].id = 3  # type: ignore[misc]
    payload = json.loads(json.dumps(result.to_dict()))
    assert payload["text"] == result.text
    assert [w["text"] for w in payload["words"]] == [w.text for w in result.words]


def _copy_model(tmp_path: Path) -> Path:
    target = tmp_path / "model"
    shutil.copytree(default_model_dir(), target)
    return target


def test_missing_model_directory(tmp_path: Path) -> None:
    with pytest.raises(ModelDirectoryError, match="nowhere"):
        Engine.load(tmp_path / "nowhere")
    with pytest.raises(ModelDirectoryError):
        Engine.load(tmp_path)  # exists, but no manifest


@pytest.mark.parametrize("missing", ["encoder.onnx", "predictor.onnx", "joint.onnx", "tokenizer.model",
                                     "features.npz"])
def test_model_directory_missing_a_file(tmp_path: Path, missing: str) -> None:
    model = _copy_model(tmp_path)
    (model / missing).unlink()
    with pytest.raises(ModelDirectoryError, match=missing.split(".")[0]):
        Engine.load(model)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda m: m.update(schema_version=99), "schema"),
        (lambda m: m.update(format="something-else"), "format"),
        (lambda m: m["decoding"].update(durations=[]), "durations"),
        (lambda m: m["decoding"].update(blank_id=3), "blank"),
        (lambda m: m["features"].pop("n_mels"), "n_mels"),
    ],
    ids=["schema", "format", "durations", "blank", "n_mels"],
)
def test_bad_manifest_is_a_manifest_error(tmp_path: Path, edit: object, message: str) -> None:
    model = _copy_model(tmp_path)
    manifest = json.loads((model / "manifest.json").read_text())
    edit(manifest)  # type: ignore[operator]
    (model / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match=message):
        Engine.load(model)


def test_unparsable_manifest_and_onnx(tmp_path: Path) -> None:
    model = _copy_model(tmp_path)
    (model / "manifest.json").write_text("{ not json")
    with pytest.raises(ManifestError):
        Engine.load(model)
    model = _copy_model(tmp_path / "b")
    (model / "joint.onnx").write_bytes(b"\x00" * 64)
    with pytest.raises(ParakeetRuntimeError):
        Engine.load(model)


def test_releasing_arena_memory_changes_no_result(engine: Engine) -> None:
    from parakeet_runtime.engine import SessionOptions

    releasing = Engine.load(session=SessionOptions(release_memory_above_seconds=0.0))
    assert releasing.model.release_above_frames == 0
    samples, rate = soundfile.read(sample_audio_path(), dtype="float32")
    inputs = [samples, samples[: rate // 2], np.concatenate([samples, samples])]
    assert releasing.transcribe(inputs) == engine.transcribe(inputs)
    for item in inputs:  # one at a time too, so that every run ends with a release
        assert releasing.transcribe(item) == engine.transcribe(item)


def test_release_memory_option_is_validated() -> None:
    from parakeet_runtime.engine import SessionOptions

    with pytest.raises(ValueError, match="release_memory_above_seconds"):
        SessionOptions(release_memory_above_seconds=-1.0)
    assert SessionOptions(release_memory_above_seconds=None).release_memory_above_seconds is None


def test_large_step_graphs_use_the_encoder_threads(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    from parakeet_runtime.engine import SessionOptions
    from parakeet_runtime.engine.model import onnx_model

    def threads(e: Engine) -> tuple[tuple[int, str], tuple[int, str]]:
        options = [s.get_session_options() for s in (e.model.predictor_session, e.model.joint_session)]
        spin = "session.intra_op.allow_spinning"
        p, j = ((o.intra_op_num_threads, o.get_session_config_entry(spin)) for o in options)
        return p, j

    # The demo's graphs are small: one thread each, nothing spins.
    assert threads(Engine.load(session=SessionOptions(threads=2))) == ((1, "0"), (1, "0"))
    monkeypatch.setattr(onnx_model, "STEP_GRAPH_THREADING_BYTES", 0)
    threaded = Engine.load(session=SessionOptions(threads=2))
    assert threads(threaded) == ((2, "0"), (2, "0"))  # no pool spins unless asked: cores may be shared
    assert threaded.transcribe(sample_audio_path()) == engine.transcribe(sample_audio_path())
    spinning = Engine.load(session=SessionOptions(threads=2, spinning=True))
    assert threads(spinning) == ((2, "1"), (2, "0"))  # asked: the predictor's pool spins, never both
    assert spinning.transcribe(sample_audio_path()) == engine.transcribe(sample_audio_path())


@pytest.mark.parametrize("model_dir", [b"model", "", 5], ids=["bytes", "empty", "number"])
def test_a_model_dir_that_is_not_a_path_or_a_name_is_a_typed_error(model_dir: object) -> None:
    """bytes raised a TypeError from the hub-name pattern; "" loaded the working directory."""
    from parakeet_runtime.engine import ModelDirectoryError

    with pytest.raises(ModelDirectoryError, match="model_dir must be a directory's path or a hub name"):
        Engine.load(model_dir)  # type: ignore[arg-type]



def test_a_model_dir_whose_path_is_not_utf8_is_a_typed_error(tmp_path: Path) -> None:
    """A path of Latin-1 bytes (as ``os.fsdecode`` gives it): sentencepiece and ONNX Runtime raised TypeErrors
    about their constructors' argument types."""
    import os

    from parakeet_runtime.engine import ModelDirectoryError, default_model_dir

    directory = Path(os.fsdecode(os.fsencode(str(tmp_path)) + b"/mod\xe8le"))
    try:
        shutil.copytree(default_model_dir(), directory)
    except (OSError, UnicodeEncodeError):
        pytest.skip("this file system does not take a name that is not UTF-8")
    with pytest.raises(ModelDirectoryError, match=r"is not UTF-8 \(byte 0xe8 at \d+\).*rename it"):
        Engine.load(directory)
    with pytest.raises(ModelDirectoryError, match=r"is not UTF-8"):
        Engine.load(str(directory))
