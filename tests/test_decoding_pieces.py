"""Decoding an utterance's frames piece by piece, each piece continuing from the carry of the one before,
is one search: the same tokens (and confidence steps) as decoding all the frames at once."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from parakeet_runtime.decoding import ConfidenceOptions, DecodedToken, TdtCarry, TdtConfig, tdt_greedy_decode
from tests.test_decoding_batch import CASES, RandomTransducer


def _pieces(rng: np.random.Generator, length: int, count: int) -> list[tuple[int, int]]:
    """``count`` consecutive (start, end) pieces covering ``0..length`` (some may be empty)."""
    cuts = sorted(rng.integers(0, length + 1, size=count - 1).tolist())
    bounds = [0, *cuts, length]
    return list(itertools.pairwise(bounds))


@pytest.mark.parametrize(("durations", "max_symbols", "blank_bias", "duration_bias"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_pieces_equal_one_search(durations: tuple[int, ...], max_symbols: int | None, blank_bias: float,
                                 duration_bias: tuple[float, ...] | None, seed: int) -> None:
    vocab, hidden = 11, 8
    rng = np.random.default_rng(200 + seed)
    bias = np.zeros(vocab + 1 + len(durations))
    bias[vocab] = blank_bias
    if duration_bias is not None:
        bias[vocab + 1 :] = duration_bias
    model = RandomTransducer.make(vocab, len(durations), hidden, seed, bias)
    config = TdtConfig(vocab, durations, max_symbols)
    options = ConfidenceOptions()
    length = 157
    frames = rng.standard_normal((length, hidden)).astype(np.float32)
    whole = tdt_greedy_decode(frames, length, model, config, lookahead=4, confidence=options)
    assert whole.carry is not None and whole.carry.skip >= 0
    checked_skips = 0
    for count in (2, 5, 17, 60):
        tokens: list[DecodedToken] = []
        steps = []
        carry: TdtCarry[np.ndarray] | None = None
        for start, end in _pieces(rng, length, count):
            piece = tdt_greedy_decode(frames[start:end], end - start, model, config, carry=carry, lookahead=3,
                                      confidence=options)
            tokens += [dataclasses.replace(t, frame=t.frame + start) for t in piece.tokens]
            assert piece.steps is not None
            steps += [dataclasses.replace(s, frame=s.frame + start) for s in piece.steps]
            carry = piece.carry
            assert carry is not None
            checked_skips += carry.skip > 0
        assert tuple(tokens) == whole.tokens, f"{count} pieces"
        assert whole.steps is not None and len(steps) == len(whole.steps)
        for mine, reference in zip(steps, whole.steps, strict=True):
            assert (mine.label, mine.frame) == (reference.label, reference.frame)
            assert mine.confidence == pytest.approx(reference.confidence, abs=1e-6)
        assert carry is not None and carry.skip == whole.carry.skip
        np.testing.assert_allclose(carry.state, whole.state, atol=1e-6)
    assert len(whole.tokens) > 0
    if sum(t.duration > 1 for t in whole.tokens) > 10:
        assert checked_skips > 0  # some piece ended inside a duration: the skip carried over was used


def test_bad_carry() -> None:
    model = RandomTransducer.make(5, 3, 4, 0, np.zeros(9))
    config = TdtConfig(5, (0, 1, 2), 2)
    output, state = model.start()
    with pytest.raises(ValueError, match="skip"):
        tdt_greedy_decode(np.zeros((4, 4), np.float32), 4, model, config, carry=TdtCarry(output, state, -1))
    # A skip past the whole piece: nothing decoded, the rest of the skip carried on.
    result = tdt_greedy_decode(np.zeros((4, 4), np.float32), 4, model, config, carry=TdtCarry(output, state, 6))
    assert result.tokens == () and result.carry is not None and result.carry.skip == 2
