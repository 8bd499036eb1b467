"""Train the demo FastConformer-TDT model on CPU with the fixture builder's TDT loss."""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass, field
from typing import Any

import soundfile

from tests.fixtures.nemo_config import Geometry, model_config

from .corpus import SAMPLE_RATE
from .recordings import RecordingPlan, compose, silence

logger = logging.getLogger("demo_model")

GEOMETRY = Geometry(
    name="demo",
    vocab_size=384,
    durations=(0, 1, 2, 3, 4),
    d_model=144,
    n_layers=6,
    n_heads=4,
    subsampling_factor=8,
    subsampling_conv_channels=64,
    conv_kernel_size=9,
    n_mels=80,
    window_size=0.025,
    window_stride=0.01,
    n_fft=512,
    pred_hidden=160,
    pred_rnn_layers=2,
    joint_hidden=256,
    max_symbols=10,
)
"""Parakeet's architecture (FastConformer, dw_striding x8, TDT durations 0-4), scaled down for 2 CPU cores."""


@dataclass(frozen=True)
class TrainOptions:
    minutes: float = 80.0
    """Training time budget: the learning-rate schedule runs on elapsed time and training stops when it
    is spent, so the recipe fits its budget on any 2-core machine (slower machines take fewer steps)."""
    batch_seconds: float = 24.0
    """Audio per batch (utterances of similar length are batched together). Small batches: early in
    training the loss falls about as much per update with 20 s as with 60 s batches, and a 20 s batch
    takes about a third of the time."""
    max_lr: float = 1.5e-3
    warmup: float = 0.08
    weight_decay: float = 1e-3
    ctc_weight: float = 0.5
    """Weight of an auxiliary CTC loss on the encoder output (Parakeet is trained as a hybrid TDT-CTC model).
    It makes the encoder discriminate words acoustically from the first steps, where the TDT loss alone
    lets the predictor learn the training sentences by heart. The CTC head is not part of the saved model."""
    short_first: float = 0.15
    """Fraction of the time budget spent on short utterances only (≤ ``short_seconds``) before the whole
    corpus: alignments are easy to find on short inputs, so the transducer leaves its initial plateau
    sooner (a curriculum in the spirit of SortaGrad)."""
    short_seconds: float = 3.0
    recordings: float = 0.0
    """Fraction of the updates (after the short-utterance phase) on composed recordings: several sentences
    of one voice with pauses (:mod:`.recordings`); the rest are single sentences."""
    recording_plan: RecordingPlan = field(default_factory=RecordingPlan)
    seed: int = 1234
    log_every: int = 50


RECORDINGS_STAGE = TrainOptions(minutes=50.0, max_lr=5e-4, warmup=0.05, ctc_weight=0.3, short_first=0.0,
                                recordings=0.5)
"""The second stage, started from the first stage's checkpoint: half the updates on recordings of 6-60 s
(several sentences, pauses of 0.1-3 s, silence around them; 5% extra inputs without speech), half on
single sentences so these are not forgotten; a lower peak learning rate, and a fresh (lighter) CTC head."""


def demo_config(tokenizer_dir: str) -> dict[str, Any]:
    """The NeMo config: the fixture config for :data:`GEOMETRY` plus SpecAugment for training."""
    cfg = model_config(GEOMETRY, tokenizer_dir)
    cfg["spec_augment"] = {
        "_target_": "nemo.collections.asr.modules.SpectrogramAugmentation",
        "freq_masks": 2,
        "time_masks": 2,
        "freq_width": 12,
        "time_width": 0.05,
    }
    # 3000 encoder frames (4 minutes of audio) keep the positional table, stored in the ONNX file,
    # small enough for the shipped directory to stay under 20 MB.
    cfg["encoder"]["pos_emb_max_len"] = 3000
    # Parakeet's predictor dropout: the small grammar is easy to memorise from the label history alone.
    cfg["decoder"]["prednet"]["dropout"] = 0.2
    return cfg


def build_model(tokenizer_dir: str):  # type: ignore[no-untyped-def]
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    return EncDecRNNTBPEModel(cfg=OmegaConf.create(demo_config(tokenizer_dir)))


def load_model(path: str):  # type: ignore[no-untyped-def]
    """A checkpoint of an earlier stage (its tokenizer comes with it)."""
    from nemo.collections.asr.models import EncDecRNNTBPEModel

    return EncDecRNNTBPEModel.restore_from(path, map_location="cpu")


def _batches(lengths: list[int], batch_samples: int, rng: random.Random, max_length: int | None = None,
             ) -> list[list[int]]:
    """Indices (of utterances no longer than ``max_length`` samples, if given) grouped by similar length,
    each group holding at most ``batch_samples`` padded samples."""
    chosen = [i for i in range(len(lengths)) if max_length is None or lengths[i] <= max_length]
    order = sorted(chosen, key=lambda i: lengths[i] + rng.random() * 8000)
    groups: list[list[int]] = []
    current: list[int] = []
    for i in order:
        if current and lengths[i] * (len(current) + 1) > batch_samples:
            groups.append(current)
            current = []
        current.append(i)
    if current:
        groups.append(current)
    rng.shuffle(groups)
    return groups


def train(model, items: list[dict[str, Any]], options: TrainOptions) -> list[dict[str, float]]:  # type: ignore[no-untyped-def]
    """Train ``model`` in place for ``options.minutes``; returns the loss log."""
    import torch

    from tests.fixtures.tdt_loss import tdt_loss

    torch.manual_seed(options.seed)
    rng = random.Random(options.seed)
    audio = [soundfile.read(it["audio"], dtype="float32")[0] for it in items]
    labels = [model.tokenizer.text_to_ids(it["text"]) for it in items]
    lengths = [len(a) for a in audio]
    blank = model.decoding.blank_id
    durations = list(GEOMETRY.durations)
    vocab_size = model.tokenizer.vocab_size
    ctc_head = torch.nn.Linear(GEOMETRY.d_model, vocab_size + 1)  # CTC blank last, as in NeMo
    parameters = list(model.parameters()) + list(ctc_head.parameters())
    optimizer = torch.optim.AdamW(parameters, lr=options.max_lr, weight_decay=options.weight_decay)
    budget = options.minutes * 60.0

    def lr_at(fraction: float) -> float:
        """Linear warm-up, then cosine decay to 2% of the peak, over the fraction of the time budget spent."""
        if fraction < options.warmup:
            return options.max_lr * max(fraction / options.warmup, 0.01)
        progress = min(1.0, (fraction - options.warmup) / (1.0 - options.warmup))
        return options.max_lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    batch_samples = int(options.batch_seconds * SAMPLE_RATE)
    short_samples = int(options.short_seconds * SAMPLE_RATE)
    plan = options.recording_plan
    by_voice: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        by_voice.setdefault(str(it.get("voice", "")), []).append(i)
    voices = sorted(by_voice)
    queue: list[list[int]] = []
    log: list[dict[str, float]] = []
    start = time.time()
    running = running_ctc = 0.0
    step = logged = 0
    in_short_phase = True
    while (elapsed := time.time() - start) < budget:
        lr = lr_at(elapsed / budget)
        for group in optimizer.param_groups:
            group["lr"] = lr
        short_phase = elapsed < options.short_first * budget
        if short_phase != in_short_phase:
            queue, in_short_phase = [], short_phase
        clips: list[Any] = []
        targets_list: list[list[int]] = []
        if not short_phase and rng.random() < options.recordings:
            seconds = rng.uniform(*plan.seconds)
            for _ in range(max(1, int(options.batch_seconds // seconds))):
                clip, ids = compose(rng, audio, labels, by_voice[rng.choice(voices)], seconds, plan)
                clips.append(clip)
                targets_list.append(ids)
        else:
            if not queue:
                queue = _batches(lengths, batch_samples, rng, short_samples if short_phase else None)
            idx = queue.pop()
            clips = [audio[i] for i in idx]
            targets_list = [labels[i] for i in idx]
        if not short_phase and rng.random() < plan.silence:
            clips.append(silence(rng, plan, max(len(c) for c in clips) / SAMPLE_RATE))
            targets_list.append([])
        size = len(clips)
        clip_lengths = [len(c) for c in clips]
        signal = torch.zeros(size, max(clip_lengths))
        for row, clip in enumerate(clips):
            signal[row, : len(clip)] = torch.from_numpy(clip)
        target_lengths = torch.tensor([len(t) for t in targets_list])
        targets = torch.full((size, max(1, int(target_lengths.max()))), blank, dtype=torch.long)
        for row, ids in enumerate(targets_list):
            targets[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        feats, feat_len = model.preprocessor(input_signal=signal, length=torch.tensor(clip_lengths))
        if not short_phase:  # no SpecAugment while the curriculum is on short utterances
            feats = model.spec_augmentation(input_spec=feats, length=feat_len)
        enc, enc_len = model.encoder(audio_signal=feats, length=feat_len)
        dec, _, _ = model.decoder(targets=targets, target_length=target_lengths)
        logits = model.joint.joint(enc.transpose(1, 2), dec.transpose(1, 2))
        loss = tdt_loss(logits, targets, enc_len, target_lengths, durations, blank)
        total = loss
        if options.ctc_weight > 0:
            ctc_logp = torch.log_softmax(ctc_head(enc.transpose(1, 2)), dim=-1).transpose(0, 1)  # (T, B, V+1)
            ctc = torch.nn.functional.ctc_loss(ctc_logp, targets, enc_len, target_lengths,
                                               blank=vocab_size, zero_infinity=True)
            total = (1.0 - options.ctc_weight) * loss + options.ctc_weight * ctc
            running_ctc += ctc.item()
        optimizer.zero_grad()
        total.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(parameters, 5.0)
        optimizer.step()
        running += loss.item()
        step += 1
        if step % options.log_every == 0 or time.time() - start >= budget:
            count = step - logged
            entry = {"step": step, "loss": running / count, "ctc_loss": running_ctc / count, "lr": lr,
                     "seconds": time.time() - start}
            log.append(entry)
            logger.info("step %d loss %.4f ctc %.4f lr %.2e (%.0f of %.0f s)", step, entry["loss"],
                        entry["ctc_loss"], lr, entry["seconds"], budget)
            running = running_ctc = 0.0
            logged = step
    logger.info("stopped after %d steps (%.0f s)", step, time.time() - start)
    model.eval()
    return log
