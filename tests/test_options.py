"""Options refuse wrong values when they are made, naming the field, instead of failing later (at load, or
in every list call) or silently doing something else."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pytest

from parakeet_runtime.decoding import ConfidenceOptions
from parakeet_runtime.engine import BatchingOptions, LongFormOptions, SessionOptions

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(("options", "field", "value"), [
    # each of these was accepted: a float count failed every list call with a TypeError, a string flag read as
    # true, NaN and infinity passed every comparison, True read as 1
    (BatchingOptions, "max_batch_size", 2.5),
    (BatchingOptions, "max_batch_size", True),
    (BatchingOptions, "max_queue", 2.5),
    (BatchingOptions, "max_concurrent_prepare", "4"),
    (BatchingOptions, "enabled", "false"),
    (BatchingOptions, "enabled", 0),
    (BatchingOptions, "max_wait_ms", NAN),
    (BatchingOptions, "max_wait_ms", "5"),
    (BatchingOptions, "max_batch_seconds", INF),
    (BatchingOptions, "max_length_ratio", NAN),
    (SessionOptions, "threads", 2.5),
    (SessionOptions, "threads", "2"),
    (SessionOptions, "spinning", "no"),
    (SessionOptions, "release_memory_above_seconds", NAN),
    (SessionOptions, "release_memory_above_seconds", INF),
    (LongFormOptions, "max_audio_seconds", True),
    (LongFormOptions, "chunk_seconds", "60"),
    (LongFormOptions, "memory_budget", 2.5),
    (ConfidenceOptions, "exclude_blank", "false"),
    (ConfidenceOptions, "include_duration", 1),
    (ConfidenceOptions, "alpha", True),
])
def test_a_wrong_type_or_value_is_refused_at_once(options: Any, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        options(**{field: value})


def test_numpy_scalars_and_whole_floats_where_numbers_are_asked_are_taken() -> None:
    four: Any = np.int64(4)
    two: Any = np.float32(2.0)
    eight: Any = np.int32(8)
    gib: Any = np.int64(1 << 30)
    batching = BatchingOptions(max_batch_size=four, max_wait_ms=two, max_batch_seconds=30, max_queue=eight)
    assert batching.max_batch_size == 4 and batching.max_queue == 8
    assert SessionOptions(threads=four, release_memory_above_seconds=10).threads == 4
    long_form = LongFormOptions(chunk_seconds=np.float64(30.0), left_context_seconds=0, max_audio_seconds=3600,
                                memory_budget=gib)
    assert long_form.budget == 1 << 30
    assert ConfidenceOptions(alpha=np.float64(0.5)).alpha == 0.5


def test_load_arguments_are_checked_before_anything_loads(tmp_path: Any) -> None:
    """precision="bogus" was accepted on this project's directories (and a ManifestError elsewhere); a bare string
    of providers was split into one provider per letter (26 lines of ONNX Runtime errors, then the CPU)."""
    from parakeet_runtime.engine import Engine, ManifestError, OptionsError, OptionsTypeError, default_model_dir

    with pytest.raises(OptionsError, match="precision must be") as refused:
        Engine.load(precision="bogus")
    assert isinstance(refused.value, ValueError) and refused.value.field == "precision"
    with pytest.raises(OptionsError, match=re.escape("SessionOptions(backend='openvino', precision=...)")) as bf16:
        Engine.load(precision="bf16")  # the CLI's --precision is the OpenVINO encoder's: the error says where it goes
    assert bf16.value.value == "bf16"
    with pytest.raises(OptionsTypeError, match="providers must be a list") as providers:
        Engine.load(providers="CPUExecutionProvider")
    assert isinstance(providers.value, TypeError) and isinstance(providers.value, OptionsError)
    for kwargs, field in (({"device": "gpu"}, "device"), ({"device": "cpu", "providers": ["CPUExecutionProvider"]},
                                                          "device"),
                          ({"argmax_step": True, "confidence": ConfidenceOptions()}, "argmax_step")):
        with pytest.raises(OptionsError) as info:
            Engine.load(**kwargs)
        assert info.value.field == field and isinstance(info.value, ValueError)
    # a forced int8 scheme on a directory with no int8 schemes was ignored
    with pytest.raises(ManifestError, match="no int8 weight schemes"):
        Engine.load(default_model_dir(), session=SessionOptions(int8_weights="int8"))
