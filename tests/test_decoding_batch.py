"""Batched greedy TDT decoding gives, for every utterance, exactly the tokens of decoding it alone."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from parakeet_runtime.decoding import TdtConfig, tdt_greedy_decode, tdt_greedy_decode_batch

State = np.ndarray


@dataclass(frozen=True)
class RandomTransducer:
    """A small random RNN predictor and joint in numpy, usable one row or many rows at a time."""

    embed: np.ndarray
    w_state: np.ndarray
    w_out: np.ndarray
    w_joint: np.ndarray
    bias: np.ndarray

    @classmethod
    def make(cls, vocab: int, num_durations: int, hidden: int, seed: int, bias: np.ndarray) -> RandomTransducer:
        rng = np.random.default_rng(seed)
        k = vocab + 1 + num_durations
        return cls(
            embed=rng.standard_normal((vocab + 1, hidden)).astype(np.float32),
            w_state=(rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32),
            w_out=(rng.standard_normal((hidden, hidden)) / np.sqrt(hidden)).astype(np.float32),
            w_joint=(rng.standard_normal((hidden, k)) * 1.5).astype(np.float32),
            bias=bias.astype(np.float32),
        )

    # single
    def initial_state(self) -> State:
        return np.zeros(self.w_state.shape[0], dtype=np.float32)

    def start(self) -> tuple[np.ndarray, State]:
        return self.predict(self.embed.shape[0] - 1, self.initial_state())

    def predict(self, label: int, state: State) -> tuple[np.ndarray, State]:
        new = np.tanh(self.embed[label] + state @ self.w_state)
        return (new @ self.w_out).astype(np.float32), new.astype(np.float32)

    def joint_frames(self, encoder_frames: np.ndarray, predictor_output: np.ndarray) -> np.ndarray:
        return self.joint_rows(encoder_frames, np.broadcast_to(predictor_output, encoder_frames.shape))

    def predict_joint(self, label: int, state: State,
                      encoder_frames: np.ndarray) -> tuple[np.ndarray, State, np.ndarray]:
        output, new_state = self.predict(label, state)
        return output, new_state, self.joint_frames(encoder_frames, output)

    # batch
    def start_rows(self, batch_size: int) -> tuple[np.ndarray, State]:
        zeros = np.zeros((batch_size, self.w_state.shape[0]), dtype=np.float32)
        blank = self.embed.shape[0] - 1
        return self.predict_rows(np.full(batch_size, blank, dtype=np.int64), zeros, np.arange(batch_size))

    def predict_rows(self, labels: np.ndarray, state: State, rows: np.ndarray) -> tuple[np.ndarray, State]:
        new_rows = np.tanh(self.embed[labels] + state[rows] @ self.w_state).astype(np.float32)
        new_state = state.copy()
        new_state[rows] = new_rows
        return (new_rows @ self.w_out).astype(np.float32), new_state

    def joint_rows(self, encoder_frames: np.ndarray, predictor_outputs: np.ndarray) -> np.ndarray:
        return np.asarray(np.tanh(encoder_frames + predictor_outputs) @ self.w_joint + self.bias, dtype=np.float32)

    def predict_joint_rows(self, labels: np.ndarray, state: State, rows: np.ndarray,
                           encoder_frames: np.ndarray) -> tuple[np.ndarray, State, np.ndarray]:
        outputs, new_state = self.predict_rows(labels, state, rows)
        return outputs, new_state, self.joint_rows(encoder_frames, outputs)


CASES = [
    # durations, max_symbols, label bias on blank, bias per duration
    ((0, 1, 2, 3, 4), 10, 0.0, None),
    ((0, 1, 2, 4, 8), 3, 0.0, None),
    ((0, 1, 2, 3, 4), 2, -30.0, (30.0, 0, 0, 0, 0)),  # no blanks, duration 0: the max_symbols cap
    ((0, 1, 2, 3, 4), 3, 0.0, (6.0, 0, 0, 0, 0)),  # runs of duration 0
    ((0, 1, 2, 4, 8), 10, 1.0, (0, 0, 0, 0, 4.0)),  # long skips
    ((1, 2, 4), None, 0.0, None),  # no symbol limit (safe: every token moves time forward)
    ((1, 2, 3), 1, 0.5, None),  # no zero duration at all
    ((0, 2), 4, -1.0, (1.0, 0)),
]


@pytest.mark.parametrize(("durations", "max_symbols", "blank_bias", "duration_bias"), CASES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_equals_single(durations: tuple[int, ...], max_symbols: int | None, blank_bias: float,
                             duration_bias: tuple[float, ...] | None, seed: int) -> None:
    vocab, hidden = 11, 8
    rng = np.random.default_rng(100 + seed)
    bias = np.zeros(vocab + 1 + len(durations))
    bias[vocab] = blank_bias
    if duration_bias is not None:
        bias[vocab + 1 :] = duration_bias
    model = RandomTransducer.make(vocab, len(durations), hidden, seed, bias)
    config = TdtConfig(vocab, durations, max_symbols)
    lengths = [0, 1, 2, 3, 7, 13, 40, 41, 97]
    rng.shuffle(lengths)
    frames = rng.standard_normal((len(lengths), max(lengths) + 2, hidden)).astype(np.float32)

    batch = tdt_greedy_decode_batch(frames, lengths, model, config)
    looking_ahead = [tdt_greedy_decode_batch(frames, lengths, model, config, lookahead=k) for k in (2, 5)]
    assert len(batch.tokens) == len(lengths)
    total = 0
    for row, length in enumerate(lengths):
        single = tdt_greedy_decode(frames[row], length, model, config)
        assert batch.tokens[row] == single.tokens, f"row {row} (length {length})"
        assert tdt_greedy_decode(frames[row], length, model, config, lookahead=3).tokens == single.tokens
        for result in (batch, *looking_ahead):
            np.testing.assert_allclose(result.state[row], single.state, atol=1e-5)  # BLAS rounding only
        assert [result.tokens[row] for result in looking_ahead] == [single.tokens] * 2
        total += len(single.tokens)
    assert total > 0


@pytest.mark.parametrize("lookahead", [2, 4, 16])
def test_lookahead_reads_each_row_in_windows(lookahead: int) -> None:
    """Rows walk the blanks of their window in one tick: fewer joint calls, the same tokens."""
    vocab, hidden, durations = 7, 6, (0, 1, 2)
    bias = np.zeros(vocab + 1 + len(durations))
    bias[vocab] = 2.5  # mostly blanks
    weights = vars(RandomTransducer.make(vocab, len(durations), hidden, 3, bias))
    config = TdtConfig(vocab, durations, 4)
    lengths = [30, 17, 0, 25]
    frames = np.random.default_rng(5).standard_normal((4, 30, hidden)).astype(np.float32)
    one, ahead = _CountingTransducer(**weights), _CountingTransducer(**weights)
    assert tdt_greedy_decode_batch(frames, lengths, one, config).tokens == tdt_greedy_decode_batch(
        frames, lengths, ahead, config, lookahead=lookahead).tokens
    singles = [tdt_greedy_decode(frames[row], n, one, config).tokens for row, n in enumerate(lengths)]
    assert list(tdt_greedy_decode_batch(frames, lengths, one, config, lookahead=lookahead).tokens) == singles
    assert sum(map(len, singles)) > 3
    # A joint call covers up to ``lookahead`` frames of each row that needs one, and fewer calls are made.
    assert max(ahead.frames_per_call) <= 3 * lookahead
    assert max(ahead.frames_per_call) > 3
    assert len(ahead.frames_per_call) < len(one.frames_per_call) // 2
    with pytest.raises(ValueError, match="lookahead"):
        tdt_greedy_decode_batch(frames, lengths, one, config, lookahead=0)


def test_batch_of_one_and_empty_batch() -> None:
    model = RandomTransducer.make(5, 3, 4, 0, np.zeros(9))
    config = TdtConfig(5, (0, 1, 2), 2)
    frames = np.random.default_rng(0).standard_normal((1, 9, 4)).astype(np.float32)
    assert tdt_greedy_decode_batch(frames, [9], model, config).tokens[0] == tdt_greedy_decode(
        frames[0], 9, model, config
    ).tokens
    assert tdt_greedy_decode_batch(frames[:0], [], model, config).tokens == ()


def test_bad_lengths() -> None:
    model = RandomTransducer.make(5, 3, 4, 0, np.zeros(9))
    config = TdtConfig(5, (0, 1, 2), 2)
    frames = np.zeros((2, 4, 4), dtype=np.float32)
    with pytest.raises(ValueError):
        tdt_greedy_decode_batch(frames, [1], model, config)
    with pytest.raises(ValueError):
        tdt_greedy_decode_batch(frames, [1, 5], model, config)


def test_joint_logits_of_the_wrong_width_are_an_error() -> None:
    model = RandomTransducer.make(5, 3, 4, 0, np.zeros(9))  # 9 logits
    frames = np.random.default_rng(0).standard_normal((2, 6, 4)).astype(np.float32)
    with pytest.raises(ValueError, match="joint logits have 9 entries, expected 8"):
        tdt_greedy_decode_batch(frames, [6, 3], model, TdtConfig(5, (0, 1), 2))


@dataclass(frozen=True)
class _CountingTransducer(RandomTransducer):
    frames_per_call: list[int] = field(default_factory=list)

    def joint_rows(self, encoder_frames: np.ndarray, predictor_outputs: np.ndarray) -> np.ndarray:
        self.frames_per_call.append(encoder_frames.shape[0])
        return super().joint_rows(encoder_frames, predictor_outputs)
