"""Parity with live NeMo ``transcribe(timestamps=True)`` on the same checkpoints and clips."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import HAVE_NEMO, load_nemo
from tests.fixtures.build import CLIP_NAMES, MODEL_NAMES
from tests.parity import assert_identical

pytestmark = [pytest.mark.nemo, pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")]


@pytest.mark.parametrize("model_name", MODEL_NAMES)
@pytest.mark.parametrize("clip_name", CLIP_NAMES)
def test_transcript_identical_to_nemo(
    model_name: str, clip_name: str, engines: dict[str, Any], reference: Any, clips: dict[str, Path]
) -> None:
    clip = clips[clip_name]
    assert_identical(engines[model_name].transcribe(clip), reference(model_name)[str(clip)])


class _CountingFallback:
    """The fp32 joint the proven ranking falls back to, counting the rows it decides."""

    def __init__(self, session: Any, counts: dict[str, int]) -> None:
        self.session, self.counts = session, counts

    def run(self, names: Any, feeds: dict[str, np.ndarray], *rest: Any) -> Any:
        self.counts["fallback_rows"] += len(next(iter(feeds.values())))
        return self.session.run(names, feeds, *rest)


@pytest.mark.parametrize("proof", ["proven", "nothing_proven"])
def test_proven_ranking_identical_to_nemo(proof: str, converted: dict[str, Path], reference: Any,
                                          clips: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact path with the joint's labels ranked in int8 and proven (the default for joints as large as
    Parakeet v3's; forced here on the small fixtures): NeMo's transcripts on every fixture model and clip; with
    every proof failing (bounds made huge) the fp32 joint decides every row, and the transcripts are the same."""
    from parakeet_runtime.engine import BatchingOptions, Engine
    from parakeet_runtime.engine.model import decoder_weights, onnx_model

    monkeypatch.setattr(onnx_model, "PROVEN_RANKING_MIN_WEIGHTS", 0)
    if proof == "nothing_proven":
        monkeypatch.setattr(decoder_weights, "_PROOF_SLACK", 1e30)
    counts = {"fallback_rows": 0}
    for model_name in MODEL_NAMES:
        for batching in (False, True):
            with Engine.load(converted[model_name], batching=BatchingOptions(enabled=batching)) as engine:
                model = engine.model
                assert model.argmax and model.decoder_weights == "fp32" and model.proven_outputs == (True, True)
                assert model.joint_fallback is not None
                object.__setattr__(model, "joint_fallback", _CountingFallback(model.joint_fallback, counts))
                paths: list[Any] = [clips[name] for name in CLIP_NAMES]
                results = engine.transcribe(paths) if batching else [engine.transcribe(p) for p in paths]
                for path, result in zip(paths, results, strict=True):
                    assert_identical(result, reference(model_name)[str(path)])
    if proof == "nothing_proven":  # 44,834 rows on Zen 4
        assert counts["fallback_rows"] > 10_000
    else:  # the ranking decides nearly every row itself, the fp32 joint the few near-ties (182 rows on Zen 4)
        assert 0 < counts["fallback_rows"] < 2_000


def test_variants_exercise_the_edge_cases(engines: dict[str, Any], reference: Any, clips: dict[str, Path]) -> None:
    """The bias variants do what they are for: duration-0 runs, the max_symbols cap, long skips."""
    def all_tokens(name: str) -> list[tuple[int, int]]:
        out: list[tuple[int, int]] = []
        for result in reference(name).values():
            out.extend(zip(result["frames"], result["durations"], strict=True))
        return out

    dur0 = all_tokens("tdt_a_dur0")
    assert sum(1 for _, d in dur0 if d == 0) >= 10
    def per_frame_counts(name: str) -> list[int]:
        counts: list[int] = []
        for result in reference(name).values():
            frames = result["frames"]
            counts.extend(frames.count(f) for f in set(frames))
        return counts

    # Runs of duration 0 reach the cap, and never pass it.
    assert max(per_frame_counts("tdt_a_dur0")) == engines["tdt_a_dur0"].manifest.decoding.max_symbols
    # Blank suppressed and duration 0 favoured: most visited frames emit exactly max_symbols labels (the
    # rest had a duration logit too strong for the bias), and no frame ever emits more.
    cap = engines["tdt_a_maxsym"].manifest.decoding.max_symbols
    counts = per_frame_counts("tdt_a_maxsym")
    assert counts and max(counts) == cap
    assert sum(c == cap for c in counts) >= 0.5 * len(counts), counts

    for name in ("tdt_a_skip", "tdt_b_skip"):
        longest = max(engines[name].manifest.decoding.durations)
        assert any(d == longest for _, d in all_tokens(name)), name
    assert max(engines["tdt_b_skip"].manifest.decoding.durations) == 8


@pytest.mark.parametrize("model_name", ["tdt_a", "tdt_b"])
def test_features_and_encoder_match_torch(
    model_name: str, engines: dict[str, Any], nemo_paths: dict[str, Path], clips: dict[str, Path]
) -> None:
    import torch

    from parakeet_runtime.engine import load_audio

    engine = engines[model_name]
    model = load_nemo(str(nemo_paths[model_name]))
    for clip in clips.values():
        samples = load_audio(clip, engine.sample_rate).samples
        with torch.inference_mode():
            feats, feat_len = model.preprocessor(
                input_signal=torch.from_numpy(samples)[None], length=torch.tensor([samples.shape[0]])
            )
            encoded, encoded_len = model.encoder(audio_signal=feats, length=feat_len)
            projected = model.joint.project_encoder(encoded.transpose(1, 2))
        ours, valid = engine.features(samples)
        assert ours.shape == tuple(feats.shape[1:])
        assert valid == int(feat_len[0])
        # NeMo computes in float32, this engine in float64: they agree to 1e-4 everywhere except rare
        # float32 rounding outliers in low-energy bins (1 element of 490,480 at 1.02e-4 in one build, 1 of
        # 92,080 in another), each still within the bound on the largest difference below.
        diff = np.abs(ours - feats[0].numpy())
        outliers = int(np.sum(diff > 1e-4))
        assert outliers <= 2 + 1e-5 * diff.size, f"{outliers} elements differ by more than 1e-4"
        assert float(diff.max()) < 2.5e-4, f"max feature difference {float(diff.max()):.2e}"
        # The encoder graph on NeMo's own features isolates the encoder from feature differences.
        # Only valid frames are compared: NeMo's feature tensor can be one frame longer than its valid
        # length, and the output frame that covers it is padding, which the export does not reproduce.
        frames, lengths = engine.model.encode(feats.numpy(), feat_len.numpy().astype(np.int64))
        valid_frames = int(encoded_len[0])
        assert int(lengths[0]) == valid_frames
        np.testing.assert_allclose(frames[0, :valid_frames], projected[0, :valid_frames].numpy(), atol=1e-4, rtol=0)


RESAMPLED_RATES = (8000, 22050, 44100, 48000)


@pytest.fixture(scope="module")
def resampled_clips(clips: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[str, ...]:
    """Two fixture clips written at other sample rates (float WAV; made with a different resampler, soundfile's
    own rates are what NeMo and the engine then read)."""
    import soundfile
    from scipy.signal import resample

    folder = tmp_path_factory.mktemp("rates")
    paths = []
    for name in ("c2_sentence", "c3_multi"):
        samples, rate = soundfile.read(clips[name], dtype="float32")
        for target in RESAMPLED_RATES:
            path = folder / f"{name}_{target}.wav"
            soundfile.write(path, resample(samples, round(len(samples) * target / rate)).astype(np.float32), target,
                            subtype="FLOAT")
            paths.append(str(path))
    return tuple(paths)


@pytest.mark.parametrize("model_name", ["tdt_a", "tdt_b"])
def test_files_at_other_sample_rates_identical_to_nemo(
    model_name: str, engines: dict[str, Any], nemo_paths: dict[str, Path], resampled_clips: tuple[str, ...]
) -> None:
    """NeMo resamples a file that is not at the model's rate (lhotse: ``scipy.signal.resample_poly``); the
    engine computes the same filter block by block, so tokens, durations and timestamps stay NeMo's."""
    from tests.conftest import nemo_transcripts

    expected = nemo_transcripts(str(nemo_paths[model_name]), resampled_clips)
    for path in resampled_clips:
        assert_identical(engines[model_name].transcribe(path), expected[path])
