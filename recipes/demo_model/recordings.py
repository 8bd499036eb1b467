"""Recordings composed from single utterances: several sentences of one voice with pauses, and silence.

The demo model learns sentences one at a time; a recording is several sentences with pauses of varied
length between them (and silence or noise before and after). These functions compose such inputs on the
fly from the training corpus, so the model sees recordings without synthesising another corpus: the
sentences keep their own audio (each already padded with a little noise), the pauses are the recording's
noise floor or digital silence, and the label sequence is the sentences' labels one after another.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .corpus import SAMPLE_RATE


@dataclass(frozen=True)
class RecordingPlan:
    seconds: tuple[float, float] = (6.0, 60.0)
    """Length of a composed recording (drawn uniformly; the last sentence may run past it)."""
    pause_seconds: tuple[float, float] = (0.1, 3.0)
    """Pause between two sentences."""
    edge_seconds: tuple[float, float] = (0.0, 1.5)
    """Extra silence before the first and after the last sentence."""
    digital_silence: float = 0.25
    """Probability that a recording's pauses are exact zeros instead of its noise floor."""
    silence: float = 0.05
    """Probability of adding an input with no speech at all (and no labels) to a batch."""
    silence_seconds: tuple[float, float] = (0.5, 10.0)


def noise_floor(clip: np.ndarray) -> float:
    """Standard deviation of the clip's first 50 ms: the corpus pads every utterance with noise-only
    leading silence (at least 50 ms), so this is the level of its background noise."""
    return float(np.std(clip[: SAMPLE_RATE // 20]))


def _gap(rng: random.Random, seconds: float, level: float) -> np.ndarray:
    n = int(seconds * SAMPLE_RATE)
    if level <= 0.0:
        return np.zeros(n, np.float32)
    noise = np.random.default_rng(rng.randrange(2**31)).standard_normal(n).astype(np.float32)
    return noise * np.float32(level)


def silence(rng: random.Random, plan: RecordingPlan, max_seconds: float | None = None) -> np.ndarray:
    """An input without speech: digital silence or low noise (about -90 to -40 dBFS)."""
    low, high = plan.silence_seconds
    seconds = rng.uniform(low, high if max_seconds is None else max(low, min(high, max_seconds)))
    level = 0.0 if rng.random() < 0.3 else 10 ** rng.uniform(-4.5, -2.0)
    return _gap(rng, seconds, level)


def compose(rng: random.Random, clips: Sequence[np.ndarray], labels: Sequence[list[int]],
            pool: Sequence[int], seconds: float, plan: RecordingPlan) -> tuple[np.ndarray, list[int]]:
    """A recording of about ``seconds``: sentences drawn from ``pool`` (indices into ``clips`` and
    ``labels``, all of one voice) separated by pauses; returns its samples and its label ids."""
    digital = rng.random() < plan.digital_silence
    pieces: list[np.ndarray] = []
    ids: list[int] = []
    total = 0
    target = int(seconds * SAMPLE_RATE)
    first = True
    while total < target or first:
        i = pool[rng.randrange(len(pool))]
        level = 0.0 if digital else noise_floor(clips[i])
        between = plan.edge_seconds if first else plan.pause_seconds
        pieces.append(_gap(rng, rng.uniform(*between), level))
        pieces.append(clips[i])
        ids.extend(labels[i])
        total += len(pieces[-2]) + len(pieces[-1])
        first = False
    pieces.append(_gap(rng, rng.uniform(*plan.edge_seconds), 0.0 if digital else noise_floor(pieces[-1])))
    return np.concatenate(pieces).astype(np.float32), ids
