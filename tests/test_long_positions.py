"""No length cliff with full attention: the exported encoder takes inputs longer than NeMo's position buffer.

NeMo's ``RelPositionalEncoding`` holds sinusoids for ``pos_emb_max_len`` frames and its encoder recomputes
them for longer inputs (``extend_pe``); the export slices the buffer within it and computes the rows beyond
it in the graph. The variants here are the fixture checkpoints restored with a small ``pos_emb_max_len``, so
that most fixture clips are longer than the buffer; NeMo extends on the fly and is the reference.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import (
    AudioTooLongError,
    Engine,
    LongFormOptions,
    ManifestError,
    PreparedAudio,
    sample_audio_path,
)
from parakeet_runtime.engine.model.manifest import MANIFEST_NAME, load_manifest, parse_manifest
from tests.conftest import HAVE_NEMO, load_nemo, nemo_transcripts
from tests.fixtures.build import CLIP_NAMES
from tests.parity import assert_identical

pytestmark = [pytest.mark.nemo, pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")]

POS_EMB_MAX_LEN = 20
"""The variants' ``pos_emb_max_len`` in encoder frames: 1.6 s of tdt_a's audio (80 ms frames), 1.28 s of
tdt_b's (64 ms); the two shortest fixture clips fit in it for tdt_a, the others do not."""
GEOMETRIES = ("tdt_a", "tdt_b")
CONCATENATED = "concatenated"
"""A clip made of five fixture clips end to end (about 20.5 s, an odd number of samples)."""


@dataclass(frozen=True)
class Variant:
    """A fixture checkpoint with a short position buffer, and its conversion."""

    nemo: Path
    model_dir: Path


def _short_buffer_checkpoint(source: Path, out: Path, max_len: int = POS_EMB_MAX_LEN) -> Path:
    """``source`` restored with ``encoder.pos_emb_max_len = max_len`` (the same weights; NeMo sizes the
    position buffer from it), saved as ``out``."""
    from nemo.collections.asr.models import ASRModel
    from omegaconf import open_dict

    cfg = ASRModel.restore_from(str(source), return_config=True, map_location="cpu")
    with open_dict(cfg):
        cfg.encoder.pos_emb_max_len = max_len
    model = ASRModel.restore_from(str(source), override_config_path=cfg, map_location="cpu")
    assert tuple(model.encoder.pos_enc.pe.shape[:2]) == (1, 2 * max_len - 1)
    model.save_to(str(out))
    return out


@pytest.fixture(scope="module")
def variants(nemo_paths: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Variant]:
    """Each geometry's variant, converted once (the conversion's own parity probe runs on the sample clip,
    longer than the buffer)."""
    from parakeet_runtime.export.convert import convert

    root = tmp_path_factory.mktemp("short-positions")
    out = {}
    for name in GEOMETRIES:
        nemo = _short_buffer_checkpoint(nemo_paths[name], root / f"{name}-pe{POS_EMB_MAX_LEN}.nemo")
        convert(str(nemo), root / name)
        out[name] = Variant(nemo, root / name)
    return out


@pytest.fixture(scope="module")
def variant_engines(variants: dict[str, Variant]) -> Iterator[dict[str, Engine]]:
    engines = {name: Engine.load(variant.model_dir) for name, variant in variants.items()}
    yield engines
    for engine in engines.values():
        engine.close()


@pytest.fixture(scope="module")
def long_clips(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The fixture clips and :data:`CONCATENATED` (written sample for sample from the 16-bit clips)."""
    parts = [soundfile.read(str(clips[name]), dtype="int16") for name in
             ("c3_multi", "c5_noisy", "c2_sentence", "c1_short", "c0_0.5s")]
    rates = {rate for _, rate in parts}
    assert len(rates) == 1
    path = tmp_path_factory.mktemp("concatenated") / f"{CONCATENATED}.wav"
    soundfile.write(str(path), np.concatenate([samples for samples, _ in parts]), rates.pop(), subtype="PCM_16")
    return {**{name: clips[name] for name in CLIP_NAMES}, CONCATENATED: path}


def _table_frames(engine: Engine) -> int:
    """Frames the converted encoder's position tables cover."""
    export = engine.manifest.provenance.encoder_export
    assert export is not None
    return export.position_table_frames


def _encoded_frames(engine: Engine, clip: Path) -> int:
    prepared = engine.prepare(clip)
    assert isinstance(prepared, PreparedAudio)
    valid = prepared.valid_frames
    return -(-valid // engine.manifest.encoder.subsampling_factor)


def test_the_manifest_sets_no_length_limit(variants: dict[str, Variant], variant_engines: dict[str, Engine]) -> None:
    for name, variant in variants.items():
        raw = json.loads((variant.model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
        assert "max_frames" in raw["encoder"] and raw["encoder"]["max_frames"] is None
        engine = variant_engines[name]
        assert engine.manifest.encoder.max_frames is None
        assert engine.preparer.max_seconds is None  # no limit but the user's
        # The position tables stop at the buffer (K - 1 frames); beyond them the graph runs the MatMul.
        assert _table_frames(engine) == POS_EMB_MAX_LEN - 1
        # The conversion's probe clip (the sample) is past the buffer already: no extra clip.
        parity = engine.manifest.provenance.parity
        assert parity is not None
        assert [Path(probe.audio).name for probe in parity] == [sample_audio_path().name]
        assert parity[0].identical and _encoded_frames(engine, sample_audio_path()) > POS_EMB_MAX_LEN


@pytest.mark.parametrize("name", GEOMETRIES)
def test_transcripts_identical_to_nemo_beyond_the_position_buffer(
    name: str, variants: dict[str, Variant], variant_engines: dict[str, Engine], long_clips: dict[str, Path]
) -> None:
    engine = variant_engines[name]
    paths = tuple(str(p) for p in long_clips.values())
    expected = nemo_transcripts(str(variants[name].nemo), paths)
    lengths = {clip: _encoded_frames(engine, path) for clip, path in long_clips.items()}
    assert sum(n > POS_EMB_MAX_LEN for n in lengths.values()) >= 5, lengths  # most clips pass the buffer
    assert min(lengths[CONCATENATED], lengths["c4_long"]) > 10 * POS_EMB_MAX_LEN, lengths
    for clip, path in long_clips.items():
        result = engine.transcribe(path)
        assert result.tokens, clip
        assert_identical(result, expected[str(path)])


@pytest.fixture(scope="module")
def five_minutes(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five minutes and a bit of fixture speech: every fixture clip in turn, end to end, until 300 s are
    passed (written sample for sample from the 16-bit clips; an odd number of samples)."""
    parts, rate, total = [], 0, 0
    while total <= 300 * (rate or 16000):
        for name in CLIP_NAMES:
            samples, rate = soundfile.read(str(clips[name]), dtype="int16")
            parts.append(samples)
            total += samples.shape[0]
    path = tmp_path_factory.mktemp("five-minutes") / "five_minutes.wav"
    soundfile.write(str(path), np.concatenate(parts), rate, subtype="PCM_16")
    return path


@pytest.mark.parametrize("name", GEOMETRIES)
def test_five_minutes_in_one_pass_identical_to_nemo(
    name: str, variants: dict[str, Variant], five_minutes: Path
) -> None:
    """Full attention over more than five minutes, two hundred times the position buffer: NeMo's tokens,
    durations, frames, words and segments."""
    with Engine.load(variants[name].model_dir, long_form=LongFormOptions(strategy="one_pass")) as engine:
        frames = _encoded_frames(engine, five_minutes)
        result = engine.transcribe(five_minutes)
    expected = nemo_transcripts(str(variants[name].nemo), (str(five_minutes),))
    assert result.duration > 300 and frames > 150 * POS_EMB_MAX_LEN
    assert result.strategy == "one_pass" and len(result.tokens) >= 10  # a fixture model says little this long
    assert_identical(result, expected[str(five_minutes)])


@pytest.mark.parametrize("name", GEOMETRIES)
def test_encoder_frames_match_nemo_past_the_table_and_the_buffer(
    name: str, variants: dict[str, Variant], variant_engines: dict[str, Engine], long_clips: dict[str, Path]
) -> None:
    """A padded batch of two inputs (the long clip and a short prefix of it): every valid encoder frame
    within float tolerance of NeMo's encoder on the same features, which extends its buffer for them."""
    import torch

    engine = variant_engines[name]
    model = load_nemo(str(variants[name].nemo))
    model.eval()
    prepared = engine.prepare(long_clips["c4_long"])
    assert isinstance(prepared, PreparedAudio)  # 61 s: one window, one pass
    features, valid = prepared.features, prepared.valid_frames
    assert features is not None
    short = 8 * POS_EMB_MAX_LEN  # feature frames: within the buffer once subsampled
    batch = np.stack([features, np.where(np.arange(features.shape[1]) < short, features, 0.0)]).astype(np.float32)
    lengths = np.array([valid, short], dtype=np.int64)
    ours, our_lengths = engine.model.encode(batch, lengths)
    with torch.inference_mode():
        encoded, encoded_lengths = model.encoder(audio_signal=torch.from_numpy(batch),
                                                 length=torch.from_numpy(lengths))
        theirs = model.joint.project_encoder(encoded.transpose(1, 2)).numpy()
    np.testing.assert_array_equal(our_lengths, encoded_lengths.numpy())
    table = _table_frames(engine)
    assert ours.shape[1] > max(table, POS_EMB_MAX_LEN) and ours.shape == theirs.shape
    for row, frames in enumerate(our_lengths):
        np.testing.assert_allclose(ours[row, :frames], theirs[row, :frames], rtol=0, atol=1e-4)


@pytest.mark.parametrize(("d_model", "max_len"), [(96, POS_EMB_MAX_LEN), (1024, 5000)])
def test_position_embeddings_are_nemos_within_the_buffer_and_beyond(d_model: int, max_len: int,
                                                                     tmp_path: Path) -> None:
    """The export forward of ``RelPositionalEncoding`` alone, traced as the encoder is and run by ONNX
    Runtime: NeMo's buffer rows bit for bit up to its length; beyond it, NeMo's recomputed rows to
    float32 rounding of sin/cos (ONNX Runtime's, not torch's)."""
    import onnxruntime as ort
    import torch
    from nemo.collections.asr.parts.submodules.multi_head_attention import RelPositionalEncoding

    from parakeet_runtime.export.graph_forwards import computes_positions, export_forwards

    def encoding() -> Any:
        module = RelPositionalEncoding(d_model=d_model, dropout_rate=0.1, max_len=max_len, xscale=d_model**0.5)
        module.extend_pe(max_len, "cpu", torch.float32)  # as ConformerEncoder.__init__ does
        return module.eval()

    class Graph(torch.nn.Module):
        def __init__(self, pos_enc: Any) -> None:
            super().__init__()
            self.pos_enc = pos_enc

        def forward(self, x: torch.Tensor) -> Any:
            return self.pos_enc(x)

    exported = encoding()
    assert computes_positions(exported)
    graph = tmp_path / "positions.onnx"
    with export_forwards(exported) as patched, torch.inference_mode():
        assert patched == 1
        torch.onnx.export(Graph(exported), (torch.randn(1, 7, d_model),), str(graph), input_names=["x"],
                          output_names=["y", "pos_emb"], dynamic_axes={"x": {0: "batch", 1: "time"}},
                          opset_version=17, dynamo=False)
    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    for time in (1, 2, max_len - 1, max_len, max_len + 1, 3 * max_len + 7):
        x = torch.randn(2, time, d_model)
        y, pos_emb = session.run(None, {"x": x.numpy()})
        reference = encoding()
        reference.extend_pe(time, "cpu", torch.float32)  # what NeMo's encoder does for this input
        with torch.inference_mode():
            expected_y, expected_pos = (t.numpy() for t in reference(x))
        np.testing.assert_array_equal(y, expected_y)
        assert pos_emb.shape == expected_pos.shape == (1, 2 * time - 1, d_model)
        if time <= max_len:
            np.testing.assert_array_equal(pos_emb, expected_pos)
        else:
            np.testing.assert_allclose(pos_emb, expected_pos, rtol=0, atol=2.5e-7)


def _raw_manifest(variant: Variant) -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((variant.model_dir / MANIFEST_NAME).read_text(encoding="utf-8"))
    return raw


def test_max_frames_may_be_absent_or_a_number(variants: dict[str, Variant]) -> None:
    raw = _raw_manifest(variants["tdt_a"])
    del raw["encoder"]["max_frames"]
    assert parse_manifest(raw).encoder.max_frames is None
    raw["encoder"]["max_frames"] = 3000
    assert parse_manifest(raw).encoder.max_frames == 3000
    for bad in (0, -1, 1.5, "3000", True, 1 << 32):
        raw["encoder"]["max_frames"] = bad
        with pytest.raises(ManifestError, match=r"encoder\.max_frames"):
            parse_manifest(raw)


def test_a_manifest_with_a_limit_keeps_it(variants: dict[str, Variant], long_clips: dict[str, Path],
                                          tmp_path: Path) -> None:
    """Older directories record the buffer's length: one pass refuses audio longer than it; the default
    (``auto``) transcribes it in chunks that fit."""
    model_dir = tmp_path / "limited"
    shutil.copytree(variants["tdt_a"].model_dir, model_dir)
    raw = _raw_manifest(variants["tdt_a"])
    raw["encoder"]["max_frames"] = POS_EMB_MAX_LEN
    (model_dir / MANIFEST_NAME).write_text(json.dumps(raw), encoding="utf-8")
    assert load_manifest(model_dir).encoder.max_frames == POS_EMB_MAX_LEN
    with Engine.load(model_dir, long_form=LongFormOptions(strategy="one_pass")) as engine:
        assert _encoded_frames(engine, long_clips["c1_short"]) <= POS_EMB_MAX_LEN
        assert engine.transcribe(long_clips["c1_short"]).tokens
        with pytest.raises(AudioTooLongError, match="longer than"):
            engine.transcribe(long_clips["c2_sentence"])
    with Engine.load(model_dir) as engine:
        geometry = engine.preparer.geometry
        assert (geometry.left + geometry.chunk + geometry.right) // geometry.frame_samples < POS_EMB_MAX_LEN
        chunked = engine.transcribe(long_clips["c2_sentence"])
        assert chunked.strategy == "chunked" and chunked.tokens


def test_the_conversion_probes_past_a_buffer_its_clips_fit_in(
    nemo_paths: dict[str, Path], variants: dict[str, Variant], variant_engines: dict[str, Engine], tmp_path: Path
) -> None:
    """A buffer of 100 frames (8 s of tdt_a) holds the sample clip (4.8 s): the conversion's parity probe
    adds the clip repeated past the buffer, and NeMo agrees on it."""
    from nemo.collections.asr.models import ASRModel

    from parakeet_runtime.export.convert import convert
    from parakeet_runtime.export.probe import LONG_PROBE_NAME, past_the_buffer, position_buffer_frames

    def restored(path: Path) -> Any:  # a fresh model: NeMo's transcribe extends the buffer
        model = ASRModel.restore_from(str(path), map_location="cpu").eval()
        assert position_buffer_frames(model) == model.cfg.encoder.pos_emb_max_len
        return model

    max_len = 100
    nemo = _short_buffer_checkpoint(nemo_paths["tdt_a"], tmp_path / f"tdt_a-pe{max_len}.nemo", max_len)
    report = convert(str(nemo), tmp_path / "converted")
    assert [Path(probe.audio).name for probe in report.probes] == [sample_audio_path().name, LONG_PROBE_NAME]
    assert all(probe.identical for probe in report.probes), report.probes
    assert load_manifest(tmp_path / "converted").provenance.parity == report.probes

    folder = tmp_path / "probe"
    folder.mkdir()
    with Engine.load(tmp_path / "converted") as engine:
        sample = sample_audio_path()
        assert _encoded_frames(engine, sample) <= max_len
        long_clip = past_the_buffer(restored(nemo), engine, [sample], folder)
        assert long_clip is not None and _encoded_frames(engine, long_clip) > max_len
    # Past the buffer already (the short variant), or too long to be cheap (the fixture's 5000 frames).
    for path in (variants["tdt_a"].nemo, nemo_paths["tdt_a"]):
        assert past_the_buffer(restored(path), variant_engines["tdt_a"], [sample], folder) is None
