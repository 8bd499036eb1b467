"""Array type aliases shared by the decoding functions (and by the engine that calls them)."""

from __future__ import annotations

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float32]
"""float32 array: encoder frames, predictor outputs, joint logits."""
IntArray: TypeAlias = npt.NDArray[np.int64]
"""int64 array: labels, lengths, frame indices, batch rows."""
BoolArray: TypeAlias = npt.NDArray[np.bool_]
"""Boolean mask."""
