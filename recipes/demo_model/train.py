"""Train the demo FastConformer-TDT model on CPU with the fixture builder's TDT loss."""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import dataclass
from typing import Any

import soundfile

from tests.fixtures.nemo_config import Geometry, model_config

logger = logging.getLogger("demo_model")

GEOMETRY = Geometry(
    name="demo",
    vocab_size=256,
    durations=(0, 1, 2, 3, 4),
    d_model=144,
    n_layers=6,
    n_heads=4,
    subsampling_factor=8,
    subsampling_conv_channels=96,
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
    minutes: float = 82.0
    """Training time budget: the learning-rate schedule runs on elapsed time and training stops when it
    is spent, so the recipe fits its budget on any 2-core machine (slower machines take fewer steps)."""
    batch_seconds: float = 60.0
    """Audio per batch (utterances of similar length are batched together)."""
    max_lr: float = 2e-3
    warmup: float = 0.08
    weight_decay: float = 1e-3
    seed: int = 1234
    log_every: int = 50


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
    return cfg


def build_model(tokenizer_dir: str):  # type: ignore[no-untyped-def]
    from nemo.collections.asr.models import EncDecRNNTBPEModel
    from omegaconf import OmegaConf

    return EncDecRNNTBPEModel(cfg=OmegaConf.create(demo_config(tokenizer_dir)))


def _batches(lengths: list[int], batch_samples: int, rng: random.Random) -> list[list[int]]:
    """Indices grouped by similar length, each group holding at most ``batch_samples`` padded samples."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i] + rng.random() * 8000)
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
    optimizer = torch.optim.AdamW(model.parameters(), lr=options.max_lr, weight_decay=options.weight_decay)
    budget = options.minutes * 60.0

    def lr_at(fraction: float) -> float:
        """Linear warm-up, then cosine decay to 2% of the peak, over the fraction of the time budget spent."""
        if fraction < options.warmup:
            return options.max_lr * max(fraction / options.warmup, 0.01)
        progress = min(1.0, (fraction - options.warmup) / (1.0 - options.warmup))
        return options.max_lr * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * progress)))

    model.train()
    batch_samples = int(options.batch_seconds * 16000)
    queue: list[list[int]] = []
    log: list[dict[str, float]] = []
    start = time.time()
    running = 0.0
    step = 0
    while (elapsed := time.time() - start) < budget:
        lr = lr_at(elapsed / budget)
        for group in optimizer.param_groups:
            group["lr"] = lr
        if not queue:
            queue = _batches(lengths, batch_samples, rng)
        idx = queue.pop()
        size = len(idx)
        signal = torch.zeros(size, max(lengths[i] for i in idx))
        for row, i in enumerate(idx):
            signal[row, : lengths[i]] = torch.from_numpy(audio[i])
        target_lengths = torch.tensor([len(labels[i]) for i in idx])
        targets = torch.full((size, int(target_lengths.max())), blank, dtype=torch.long)
        for row, i in enumerate(idx):
            targets[row, : len(labels[i])] = torch.tensor(labels[i])
        feats, feat_len = model.preprocessor(input_signal=signal, length=torch.tensor([lengths[i] for i in idx]))
        feats = model.spec_augmentation(input_spec=feats, length=feat_len)
        enc, enc_len = model.encoder(audio_signal=feats, length=feat_len)
        dec, _, _ = model.decoder(targets=targets, target_length=target_lengths)
        logits = model.joint.joint(enc.transpose(1, 2), dec.transpose(1, 2))
        loss = tdt_loss(logits, targets, enc_len, target_lengths, durations, blank)
        optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        optimizer.step()
        running += loss.item()
        step += 1
        if step % options.log_every == 0:
            entry = {"step": step, "loss": running / options.log_every, "lr": lr, "seconds": time.time() - start}
            log.append(entry)
            logger.info("step %d loss %.4f lr %.2e (%.0f of %.0f s)", step, entry["loss"], lr, entry["seconds"],
                        budget)
            running = 0.0
    if step % options.log_every:
        log.append({"step": step, "loss": running / (step % options.log_every), "lr": lr,
                    "seconds": time.time() - start})
    logger.info("stopped after %d steps (%.0f s)", step, time.time() - start)
    model.eval()
    return log
