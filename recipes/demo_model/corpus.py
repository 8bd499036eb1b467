"""Speak sentences with espeak-ng: several voices, rates and pitches, random gain, light noise.

Each utterance is written as a 16 kHz mono 16-bit WAV; a JSON-lines manifest lists ``audio``, ``text``,
``voice``, ``rate``, ``pitch`` and ``seconds``.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import subprocess
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile
import soxr

SAMPLE_RATE = 16000

SEEN_VOICES = (
    "en-us", "en-us+f3", "en-gb+m3", "en-gb-x-rp+f2", "en-gb-scotland+m1", "en-029+f4", "en-us-nyc+m5",
    "en-gb-x-gbclan+m2",
)
"""Voices used for training (and for the seen-voice evaluation)."""

UNSEEN_VOICES = ("en-gb-x-gbcwmd+m6", "en-us+f5", "en-029+m7")
"""Voices never used in training (accents or variants the model has not heard)."""


@dataclass(frozen=True)
class Utterance:
    text: str
    voice: str
    rate: int
    pitch: int
    gain_db: float
    snr_db: float
    lead_s: float
    tail_s: float
    seed: int


def plan(texts: Iterable[str], voices: tuple[str, ...], seed: int) -> list[Utterance]:
    """One utterance per text, with a random voice, rate, pitch, gain, noise level and padding."""
    r = random.Random(seed)
    return [
        Utterance(text=t, voice=r.choice(voices), rate=r.randint(130, 200), pitch=r.randint(30, 70),
                  gain_db=r.uniform(-12.0, 0.0), snr_db=r.uniform(20.0, 45.0), lead_s=r.uniform(0.05, 0.4),
                  tail_s=r.uniform(0.05, 0.4), seed=r.randrange(2**31))
        for t in texts
    ]


def synthesise(u: Utterance) -> np.ndarray:
    """The utterance as float32 samples at 16 kHz."""
    wav = subprocess.run(
        ["espeak-ng", "-v", u.voice, "-s", str(u.rate), "-p", str(u.pitch), "--stdout", u.text],
        check=True, capture_output=True,
    ).stdout
    audio, rate = soundfile.read(io.BytesIO(wav), dtype="float32")
    audio = soxr.resample(audio, rate, SAMPLE_RATE, quality="HQ").astype(np.float32)
    peak = float(np.max(np.abs(audio))) or 1.0
    audio = audio / peak * 0.7 * 10 ** (u.gain_db / 20)
    rng = np.random.default_rng(u.seed)
    audio = np.concatenate([np.zeros(int(u.lead_s * SAMPLE_RATE), np.float32), audio,
                            np.zeros(int(u.tail_s * SAMPLE_RATE), np.float32)])
    power = float(np.mean(audio**2)) or 1e-8
    noise = rng.standard_normal(len(audio)).astype(np.float32) * np.sqrt(power / 10 ** (u.snr_db / 10))
    out: np.ndarray = np.clip(audio + noise, -1.0, 1.0).astype(np.float32)
    return out


def write_corpus(utterances: list[Utterance], out_dir: Path, prefix: str, workers: int = 4) -> Path:
    """Synthesise every utterance into ``out_dir``; returns the manifest path.

    A corpus already written from the same plan (recorded by its digest beside the manifest) is reused.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / f"{prefix}.jsonl"
    digest_file = out_dir / f"{prefix}.plan-sha256"
    digest = hashlib.sha256(repr(utterances).encode()).hexdigest()
    if manifest.exists() and digest_file.exists() and digest_file.read_text().strip() == digest:
        return manifest

    def one(item: tuple[int, Utterance]) -> dict[str, object]:
        i, u = item
        audio = synthesise(u)
        path = out_dir / f"{prefix}_{i:05d}.wav"
        soundfile.write(path, audio, SAMPLE_RATE, subtype="PCM_16")
        return {"audio": str(path), "text": u.text, "voice": u.voice, "rate": u.rate, "pitch": u.pitch,
                "seconds": len(audio) / SAMPLE_RATE}

    with ThreadPoolExecutor(workers) as pool:
        rows = list(pool.map(one, enumerate(utterances)))
    manifest.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    digest_file.write_text(digest + "\n")
    return manifest


def read_manifest(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]
