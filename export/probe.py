"""Export-time parity: decode probe audio with NeMo and with the new directory, and compare."""

from __future__ import annotations

import contextlib
import logging
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from parakeet_runtime.engine import Engine, LongFormOptions, load_audio
from parakeet_runtime.engine.model.manifest import ParityProbe

from .errors import ParityError

logger = logging.getLogger(__name__)

ProbeResult = ParityProbe
"""Comparison of one probe clip (the manifest's record of it)."""

LONG_PROBE_SECONDS = 120.0
"""Longest clip :func:`past_the_buffer` makes: past NeMo's position buffer only where that is cheap (not for
Parakeet's 5000 frames, 400 s)."""
LONG_PROBE_NAME = "past-the-position-buffer.wav"


GREEDY_STRATEGIES = ("greedy", "greedy_batch")
"""NeMo's greedy decoding strategies: what the engine computes (its search is NeMo's greedy TDT search)."""


@contextlib.contextmanager
def model_state_kept(model: Any, *, greedy: bool = False) -> Iterator[None]:
    """NeMo's ``transcribe`` leaves the modules in train mode and, asked for timestamps, switches the
    decoding config's ``compute_timestamps`` for good: both come back as they were after the block. With
    ``greedy``, a checkpoint saved with another decoding strategy (beam search) decodes with NeMo's
    ``greedy_batch`` inside the block, the engine's search, and gets its own strategy back after it."""
    modes = [(module, module.training) for module in model.modules()]
    decoding_cfg = getattr(getattr(model, "cfg", None), "decoding", None)
    timestamps = decoding_cfg.get("compute_timestamps", None) if decoding_cfg is not None else None
    strategy = decoding_cfg.get("strategy", None) if decoding_cfg is not None else None
    switched = greedy and decoding_cfg is not None and strategy not in (None, *GREEDY_STRATEGIES)
    if switched:
        from omegaconf import open_dict

        with open_dict(model.cfg.decoding):
            model.cfg.decoding.strategy = "greedy_batch"
        model.change_decoding_strategy(model.cfg.decoding, verbose=False)
    try:
        yield
    finally:
        restored = switched
        if decoding_cfg is not None and model.cfg.decoding.get("compute_timestamps", None) != timestamps:
            from omegaconf import open_dict

            with open_dict(model.cfg.decoding):
                if timestamps is None:
                    del model.cfg.decoding["compute_timestamps"]
                else:
                    model.cfg.decoding.compute_timestamps = timestamps
            restored = True
        if switched:
            from omegaconf import open_dict

            with open_dict(model.cfg.decoding):
                model.cfg.decoding.strategy = strategy
        if restored:
            model.change_decoding_strategy(model.cfg.decoding, verbose=False)
        for module, training in modes:
            module.train(training)


@contextlib.contextmanager
def validation_ds_for_transcribe(model: Any) -> Iterator[None]:
    """NeMo's ``transcribe`` reads ``cfg.validation_ds.use_start_end_token`` (default false) to build its data
    loader, and fails with ``'NoneType' object has no attribute 'get'`` on a checkpoint saved with
    ``validation_ds: null`` (or without it). Inside the block such a config has an empty ``validation_ds`` (so
    ``use_start_end_token`` takes its default, as in a config that leaves it out); after it, the config is as it
    was."""
    cfg = getattr(model, "cfg", None)
    if cfg is None or cfg.get("validation_ds", None) is not None:
        yield
        return
    from omegaconf import open_dict

    present = "validation_ds" in cfg
    with open_dict(cfg):
        cfg.validation_ds = {}
    try:
        yield
    finally:
        with open_dict(cfg):
            if present:
                cfg.validation_ds = None
            else:
                del cfg["validation_ds"]


def nemo_reference(model: Any, path: Path) -> tuple[list[int], list[int], list[int]]:
    """Token ids, frames and durations from NeMo ``transcribe(timestamps=True)``, one clip per batch."""
    with model_state_kept(model, greedy=True), validation_ds_for_transcribe(model):
        model.eval()
        hypotheses = model.transcribe([str(path)], batch_size=1, timestamps=True, return_hypotheses=True,
                                      verbose=False)
    if isinstance(hypotheses, tuple):
        hypotheses = hypotheses[0]
    hyp = hypotheses[0]
    ids = [int(t) for t in hyp.y_sequence]
    frames = [int(t) for t in hyp.timestamp["timestep"]]
    durations = [int(d) for d in hyp.token_duration]
    return ids, frames, durations


def _torch_outputs(model: Any, samples: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """NeMo's features, their valid length, and its projected encoder frames up to their valid length."""
    import torch

    featurizer = model.preprocessor.featurizer
    pad_to = featurizer.pad_to
    with model_state_kept(model), torch.inference_mode():
        model.eval()
        signal = torch.from_numpy(samples)[None]
        length = torch.tensor([samples.shape[0]])
        featurizer.pad_to = 0  # as NeMo's transcribe runs it (and the engine's features are): no padding to a multiple
        try:
            feats, feat_len = model.preprocessor(input_signal=signal, length=length)
        finally:
            featurizer.pad_to = pad_to
        encoded, encoded_len = model.encoder(audio_signal=feats, length=feat_len)
        projected = model.joint.project_encoder(encoded.transpose(1, 2))
    # frames past the valid length are padding, whatever each side leaves there (a x2 striding encoder's last one)
    return feats[0].numpy(), int(feat_len[0]), projected[0, : int(encoded_len[0])].numpy()


def position_buffer_frames(model: Any) -> int | None:
    """Encoder frames NeMo's relative position buffer covers, where the export computes the embeddings
    past it (:func:`.graph_forwards.computes_positions`); else ``None``."""
    from .graph_forwards import computes_positions

    pos_enc: Any = getattr(model.encoder, "pos_enc", None)
    return (int(pos_enc.pe.shape[1]) + 1) // 2 if computes_positions(pos_enc) else None


def past_the_buffer(model: Any, engine: Engine, probes: Sequence[Path], folder: Path) -> Path | None:
    """A probe clip longer than NeMo's position buffer, written into ``folder``: the probe clips end to end
    (at the model's rate, float32), repeated as needed. ``None`` when a probe clip already is longer, when
    the export keeps NeMo's buffer as the limit, or when the clip would last over :data:`LONG_PROBE_SECONDS`."""
    import soundfile

    frames = position_buffer_frames(model)
    if frames is None or not probes:
        return None
    spec = engine.manifest
    if (frames + 1) * spec.encoder.subsampling_factor * spec.features.window_stride > LONG_PROBE_SECONDS:
        return None

    def encoded(samples: int) -> int:
        return -(-engine.features.valid_frames(samples) // spec.encoder.subsampling_factor)

    clips = [load_audio(path, engine.sample_rate).samples for path in probes]
    total = sum(clip.shape[0] for clip in clips)
    if total == 0 or max(encoded(clip.shape[0]) for clip in clips) > frames:
        return None
    repeats = 1
    while encoded(repeats * total) <= frames:
        repeats += 1
    path = folder / LONG_PROBE_NAME
    soundfile.write(str(path), np.concatenate(clips * repeats), engine.sample_rate, subtype="FLOAT")
    return path


def check_parity(model: Any, model_dir: Path, probes: list[Path]) -> list[ParityProbe]:
    """Compare NeMo and the converted directory on each probe clip, and on one clip past NeMo's position
    buffer where that is cheap (:func:`past_the_buffer`).

    Raises:
        ParityError: token ids, frames or durations differ on any clip.
    """
    results = []
    one_pass = LongFormOptions(strategy="one_pass")  # NeMo's transcribe encodes every clip in one pass
    with Engine.load(model_dir, providers=["CPUExecutionProvider"], long_form=one_pass) as engine, \
            tempfile.TemporaryDirectory(prefix="parakeet-probe-") as scratch:
        long_clip = past_the_buffer(model, engine, probes, Path(scratch))
        for path in [*probes, *([long_clip] if long_clip is not None else [])]:
            audio = load_audio(path, engine.sample_rate)
            ours = engine.transcribe(audio.samples)
            ids, frames, durations = nemo_reference(model, path)
            our_ids = [t.id for t in ours.tokens]
            our_frames = [t.frame for t in ours.tokens]
            our_durations = [t.duration for t in ours.tokens]
            ref_feats, valid, ref_proj = _torch_outputs(model, audio.samples)
            feats, our_valid = engine.features(audio.samples)
            proj, proj_lengths = engine.model.encode(feats[None], np.array([our_valid], dtype=np.int64))
            feature_diff = float(np.max(np.abs(feats[:, :valid] - ref_feats[:, :valid]))) if valid else 0.0
            compared = min(int(proj_lengths[0]), ref_proj.shape[0])  # valid frames on both sides
            encoder_diff = float(np.max(np.abs(proj[0, :compared] - ref_proj[:compared]))) if compared else 0.0
            identical = (ids, frames, durations) == (our_ids, our_frames, our_durations)
            detail = "" if identical else (
                f"NeMo ids={ids} frames={frames} durations={durations}; "
                f"converted ids={our_ids} frames={our_frames} durations={our_durations}"
            )
            results.append(ParityProbe(str(path), len(ids), identical, feature_diff, encoder_diff, detail))
            logger.info("probe %s: %d tokens, identical=%s, features %.2e, encoder %.2e",
                        path.name, len(ids), identical, feature_diff, encoder_diff)
    bad = [r for r in results if not r.identical]
    if bad:
        raise ParityError("converted model disagrees with NeMo on " + "; ".join(f"{r.audio}: {r.detail}" for r in bad))
    return results
