"""How far an int8 directory's (or a bf16 backend's) encoder frames are from the fp32 directory's.

Token agreement on the tiny fixture models is a poor test of a quantiser: they are trained for 400 steps, their
argmaxes are close calls, and each fixture build (trained again on every machine, whose float rounding differs)
drifts differently under the same int8 error (tdt_a's signed int8 graph: 4 of 6 clips identical on one build, 2
of 6 on another). The encoder frames' error is what the quantiser controls, and it barely moves between builds.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import soundfile

from parakeet_runtime.engine import BatchingOptions, Engine, SessionOptions

FRAME_ERROR_BOUND = 0.03
"""Relative error bound of int8 encoder frames (Frobenius norm of the difference over fp32's, per clip): measured
0.006-0.008 on both trained fixtures, both weight schemes, on an Intel Xeon with AMX (2026-12-02). A wrong scale
or zero point, or saturating products, gives errors of 0.1 and more."""

BF16_FRAME_ERROR_BOUND = 0.1
"""The same for OpenVINO bf16 on the fp32 directory: measured 0.0035-0.0042 (tdt_a) and 0.0037-0.034 (tdt_b,
largest on its 61 s clip) on an Intel Xeon with AMX (2026-12-02)."""


INTEGER_PRODUCTS = frozenset({"MatMulInteger", "MatMulIntegerToFloat"})
"""An int8 encoder's integer products: ``MatMulInteger`` (behind ``DynamicQuantizeLinear``, which ONNX Runtime fuses at
load) or the fused ``MatMulIntegerToFloat`` the fixed quantisers write (``export.row_scales._fuse_products``)."""

DEFAULT_SESSION = SessionOptions()
"""ONNX Runtime, the weight graph ``auto`` picks on this CPU."""


def encoder_frame_errors(fp32_dir: Path, int8_dir: Path, clips: Sequence[Path], *,
                         session: SessionOptions = DEFAULT_SESSION) -> list[float]:
    """Per clip, ``|int8 frames - fp32 frames| / |fp32 frames|`` over the valid encoder frames, both encoders
    fed the same features; ``session`` loads ``int8_dir`` (its ``int8_weights`` picks the weight graph), which
    may also be the fp32 directory run at another precision."""
    off = BatchingOptions(enabled=False)
    errors = []
    with Engine.load(fp32_dir, batching=off) as fp32, Engine.load(
        int8_dir, batching=off, session=session
    ) as int8:
        for clip in clips:
            audio, _ = soundfile.read(clip, dtype="float32")
            features, valid = fp32.features(audio)
            lengths = np.array([valid], dtype=np.int64)
            expected, counts = fp32.model.encode(features[None], lengths)
            got, _ = int8.model.encode(features[None], lengths)
            reference = expected[0, : counts[0]]
            errors.append(float(np.linalg.norm(got[0, : counts[0]] - reference) / np.linalg.norm(reference)))
    return errors
