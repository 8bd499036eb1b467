"""The pure TDT search and timestamp functions, against hand-made cases and against NeMo's own code."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
import pytest

from parakeet_runtime.decoding import (
    DecodedToken,
    FloatArray,
    IntArray,
    TdtConfig,
    TimestampConfig,
    TokenSpan,
    segment_spans,
    segment_tokens,
    tdt_greedy_decode,
    token_spans,
    word_spans,
)
from parakeet_runtime.decoding.rules import blank_skip, forced_ahead, labels_at_frame
from tests.conftest import HAVE_NEMO

# --- a scripted step model -----------------------------------------------------------------------


@dataclass(frozen=True)
class Scripted:
    """Joint outputs scripted per (frame, number of labels emitted so far)."""

    script: dict[tuple[int, int], tuple[int, int]]  # (frame, emitted) -> (label, duration index)
    num_labels: int
    num_durations: int

    def initial_state(self) -> int:
        return 0

    def start(self) -> tuple[np.ndarray, int]:
        return self.predict(self.num_labels - 1, 0)

    def predict(self, label: int, state: int) -> tuple[np.ndarray, int]:
        emitted = state if label == self.num_labels - 1 else state + 1
        return np.array([emitted], dtype=np.float32), emitted

    def joint(self, encoder_frame: np.ndarray, predictor_output: np.ndarray) -> np.ndarray:
        frame, emitted = int(encoder_frame[0]), int(predictor_output[0])
        label, dur = self.script.get((frame, emitted), (self.num_labels - 1, 1))
        logits = np.zeros(self.num_labels + self.num_durations, dtype=np.float32)
        logits[label] = 1.0
        logits[self.num_labels + dur] = 1.0
        return logits

    def joint_frames(self, encoder_frames: np.ndarray, predictor_output: np.ndarray) -> np.ndarray:
        return np.stack([self.joint(frame, predictor_output) for frame in encoder_frames])

    def predict_joint(self, label: int, state: int, encoder_frames: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        output, new_state = self.predict(label, state)
        return output, new_state, Scripted.joint_frames(self, encoder_frames, output)


def frames(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)[:, None]


def test_blank_with_duration_zero_advances_one_frame() -> None:
    blank = 3
    model = Scripted({(0, 0): (blank, 0), (1, 0): (1, 2)}, num_labels=4, num_durations=3)
    result = tdt_greedy_decode(frames(5), 5, model, TdtConfig(blank, (0, 1, 2), None))
    assert result.tokens == (DecodedToken(1, 1, 2),)


def test_durations_map_through_the_manifest_list() -> None:
    blank = 3
    model = Scripted({(0, 0): (0, 3), (8, 1): (2, 1)}, num_labels=4, num_durations=4)
    result = tdt_greedy_decode(frames(12), 12, model, TdtConfig(blank, (0, 1, 4, 8), None))
    assert result.tokens == (DecodedToken(0, 0, 8), DecodedToken(2, 8, 1))


def test_max_symbols_forces_one_frame() -> None:
    blank = 3
    script = {(0, i): (1, 0) for i in range(10)}
    model = Scripted(script, num_labels=4, num_durations=2)
    result = tdt_greedy_decode(frames(3), 3, model, TdtConfig(blank, (0, 1), 2))
    assert [(t.frame, t.duration) for t in result.tokens] == [(0, 0), (0, 0)]
    assert result.state == 2


def test_predictor_state_advances_only_on_labels() -> None:
    blank = 3
    model = Scripted({(2, 0): (0, 1), (4, 1): (1, 1)}, num_labels=4, num_durations=2)
    result = tdt_greedy_decode(frames(6), 6, model, TdtConfig(blank, (0, 1), 10))
    assert [t.id for t in result.tokens] == [0, 1]
    assert result.state == 2


@pytest.mark.parametrize("lookahead", [1, 2, 3, 8])
def test_lookahead_changes_the_calls_not_the_tokens(lookahead: int) -> None:
    """Blank runs read the joint for several frames per call; labels restart the window."""
    blank = 3
    # Blanks of duration 1 on frames 0-6, a label at 7 (duration 0, then 1), blanks of duration 0 (advance
    # by one) to 11, a label at 12; the script is keyed by (frame, labels emitted so far).
    script = {(7, 0): (0, 0), (7, 1): (2, 1), (12, 2): (1, 1)}
    script.update({(f, 0): (blank, 1) for f in range(7)})
    script.update({(f, 2): (blank, 0) for f in range(8, 12)})
    counted = _CountingScripted(script, num_labels=4, num_durations=2)
    config = TdtConfig(blank, (0, 1), 10)
    result = tdt_greedy_decode(frames(14), 14, counted, config, lookahead=lookahead)
    assert [(t.id, t.frame, t.duration) for t in result.tokens] == [(0, 7, 0), (2, 7, 1), (1, 12, 1)]
    # ``predict_joint`` brings the joint of up to ``lookahead`` frames (at most to the end) from the next
    # one on: 7... (the first label has duration 0), 8... and 13. ``joint_frames`` reads the rest in
    # windows of ``lookahead`` frames: 0-7 from the start, then 8 + lookahead... to 12.
    assert counted.steps == [min(lookahead, 7), min(lookahead, 6), 1]
    expected_calls = -(-8 // lookahead) + -(-max(0, 5 - lookahead) // lookahead)
    assert counted.windows == expected_calls
    with pytest.raises(ValueError, match="lookahead"):
        tdt_greedy_decode(frames(4), 4, counted, config, lookahead=0)


@pytest.mark.parametrize("label_lookahead", [1, 2, 5, 9])
def test_label_lookahead_sets_the_frames_after_a_label_only(label_lookahead: int) -> None:
    """``label_lookahead``: the frames the step after a label brings; runs of blanks keep ``lookahead``'s windows."""
    blank, lookahead = 3, 3
    script = {(7, 0): (0, 0), (7, 1): (2, 1), (12, 2): (1, 1)}
    script.update({(f, 0): (blank, 1) for f in range(7)})
    script.update({(f, 2): (blank, 0) for f in range(8, 12)})
    counted = _CountingScripted(script, num_labels=4, num_durations=2)
    config = TdtConfig(blank, (0, 1), 10)
    result = tdt_greedy_decode(frames(14), 14, counted, config, lookahead=lookahead, label_lookahead=label_lookahead)
    assert [(t.id, t.frame, t.duration) for t in result.tokens] == [(0, 7, 0), (2, 7, 1), (1, 12, 1)]
    assert counted.steps == [min(label_lookahead, 7), min(label_lookahead, 6), 1]
    # Frames 0-7 in windows of ``lookahead``, then from 8 + label_lookahead to 12.
    assert counted.windows == -(-8 // lookahead) + -(-max(0, 5 - label_lookahead) // lookahead)
    with pytest.raises(ValueError, match="label_lookahead"):
        tdt_greedy_decode(frames(4), 4, counted, config, lookahead=2, label_lookahead=0)


@dataclass(frozen=True)
class _CountingScripted(Scripted):
    calls: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)

    @property
    def windows(self) -> int:
        return len(self.calls)

    def joint_frames(self, encoder_frames: np.ndarray, predictor_output: np.ndarray) -> np.ndarray:
        self.calls.append(encoder_frames.shape[0])
        return super().joint_frames(encoder_frames, predictor_output)

    def predict_joint(self, label: int, state: int, encoder_frames: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
        self.steps.append(encoder_frames.shape[0])
        return super().predict_joint(label, state, encoder_frames)


def test_empty_and_zero_length() -> None:
    model = Scripted({}, num_labels=4, num_durations=2)
    assert tdt_greedy_decode(frames(0), 0, model, TdtConfig(3, (0, 1), 10)).tokens == ()
    assert tdt_greedy_decode(frames(4), 0, model, TdtConfig(3, (0, 1), 10)).tokens == ()
    with pytest.raises(ValueError):
        tdt_greedy_decode(frames(4), 5, model, TdtConfig(3, (0, 1), 10))


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        TdtConfig(3, (), 10)
    with pytest.raises(ValueError):
        TdtConfig(3, (0, -1), 10)
    with pytest.raises(ValueError):
        TdtConfig(3, (0, 1), 0)


def test_shared_rules_give_the_same_on_ints_and_on_rows() -> None:
    """The single search calls the rules with ints, the batched one with rows: one body, the same answers."""
    grid = [(d, n, f) for d in range(3) for n in range(5) for f in (-1, 0, 3)]
    duration, count, frame = (np.array(column, dtype=np.int64) for column in zip(*grid, strict=True))
    for max_symbols in (None, 1, 2, 3):
        rows = forced_ahead(duration, count, max_symbols)
        assert rows.dtype == np.bool_
        singles = [forced_ahead(int(d), int(n), max_symbols) for d, n in zip(duration, count, strict=True)]
        assert rows.tolist() == singles
        assert any(singles) == (max_symbols is not None)
    assert not forced_ahead(duration, count, None).any()
    assert blank_skip(duration).tolist() == [blank_skip(int(d)) for d in duration]
    assert labels_at_frame(count, frame, duration).tolist() == [
        labels_at_frame(int(n), int(f), int(d)) for n, f, d in zip(count, frame, duration, strict=True)
    ]


def test_joint_logits_of_the_wrong_width_are_an_error() -> None:
    """Logits that do not match the configured labels and durations are refused, not misread."""
    blank = 3
    model = Scripted({}, num_labels=4, num_durations=3)  # 7 logits
    with pytest.raises(ValueError, match="joint logits have 7 entries, expected 6"):
        tdt_greedy_decode(frames(4), 4, model, TdtConfig(blank, (0, 1), 10))
    assert tdt_greedy_decode(frames(4), 4, model, TdtConfig(blank, (0, 1, 2), 10)).tokens == ()


def test_float_array_is_exported() -> None:
    assert FloatArray == npt.NDArray[np.float32]
    assert IntArray == npt.NDArray[np.int64]


# --- against NeMo's label-looping computer on random networks -------------------------------------

needs_nemo = pytest.mark.skipif(not HAVE_NEMO, reason="needs NeMo (the export extra)")


@needs_nemo
@pytest.mark.nemo
@pytest.mark.parametrize(
    ("durations", "max_symbols"),
    [
        ((0, 1, 2, 3, 4), 1), ((0, 1, 2, 3, 4), 3), ((0, 1, 2, 3, 4), 10),
        ((0, 1, 2, 4, 8), 1), ((0, 1, 2, 4, 8), 3),
        ((1, 2, 3), 1), ((1, 2, 3), 3),
        # No symbol limit only where every token moves time forward: with duration 0 and no limit,
        # NeMo's search (and so ours) can loop forever on a model that keeps emitting at one frame.
        ((1, 2, 3), None), ((1, 2, 4), None),
    ],
)
def test_greedy_matches_nemo_label_looping(durations: tuple[int, ...], max_symbols: int | None) -> None:
    import torch
    from nemo.collections.asr.modules import RNNTDecoder, RNNTJoint
    from nemo.collections.asr.parts.submodules.transducer_decoding.tdt_label_looping import (
        GreedyBatchedTDTLabelLoopingComputer,
    )
    from nemo.collections.asr.parts.utils.rnnt_utils import batched_hyps_to_hypotheses

    vocab, hidden = 12, 16
    torch.manual_seed(sum(durations) * 7 + (max_symbols or 0))
    decoder = RNNTDecoder(prednet={"pred_hidden": hidden, "pred_rnn_layers": 1}, vocab_size=vocab).eval()
    joint = RNNTJoint(
        jointnet={"joint_hidden": hidden, "activation": "relu", "encoder_hidden": hidden, "pred_hidden": hidden},
        num_classes=vocab,
        num_extra_outputs=len(durations),
    ).eval()
    computer = GreedyBatchedTDTLabelLoopingComputer(
        decoder, joint, blank_index=vocab, durations=list(durations), max_symbols_per_step=max_symbols,
        include_duration=True, allow_cuda_graphs=False,
    )

    class TorchStep:
        def initial_state(self) -> object:
            return None

        def start(self) -> tuple[np.ndarray, object]:
            return self.predict(vocab, None)

        def predict(self, label: int, state: object) -> tuple[np.ndarray, object]:
            with torch.inference_mode():
                out, new_state = decoder.predict(torch.tensor([[label]]), state, add_sos=False, batch_size=1)
                return joint.project_prednet(out)[0, 0].numpy(), new_state

        def joint_frames(self, encoder_frames: np.ndarray, predictor_output: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                f = torch.from_numpy(encoder_frames)[None]
                g = torch.from_numpy(predictor_output)[None, None]
                logits: np.ndarray = joint.joint_after_projection(f, g)[0, :, 0].numpy()
                return logits

        def predict_joint(self, label: int, state: object,
                          encoder_frames: np.ndarray) -> tuple[np.ndarray, object, np.ndarray]:
            output, new_state = self.predict(label, state)
            return output, new_state, self.joint_frames(encoder_frames, output)

    for trial in range(12):
        with torch.no_grad():
            # Shift biases so that blanks, labels and every duration all occur.
            joint.joint_net[-1].bias.copy_(torch.randn(vocab + 1 + len(durations)) * 2.0)
        length = 5 + 7 * trial
        encoded = torch.randn(1, length + 3, hidden)
        with torch.inference_mode():
            hyps, _ = computer(encoded, torch.tensor([length]))
            hyp = batched_hyps_to_hypotheses(hyps)[0]
            projected = joint.project_encoder(encoded)[0].numpy()
        expected = list(
            zip(hyp.y_sequence.tolist(), hyp.timestamp.tolist(), hyp.token_duration.tolist(), strict=True)
        )
        for lookahead, label_lookahead in ((1, None), (4, None), (8, 5), (2, 7)):
            ours = tdt_greedy_decode(projected, length, TorchStep(), TdtConfig(vocab, durations, max_symbols),
                                     lookahead=lookahead, label_lookahead=label_lookahead)
            assert [(t.id, t.frame, t.duration) for t in ours.tokens] == expected, (trial, lookahead, label_lookahead)


# --- timestamps against NeMo's functions ----------------------------------------------------------

PIECE_CASES = [
    ["▁hello", "▁wor", "ld", "."],
    ["▁what", "▁time", "▁is", "▁it", "?", "▁the", "▁train", ",", "▁yes", "!"],
    [".", "▁a", "▁", ".", "▁b", "c", "▁", "▁d", ","],
    ["▁", "x", "▁y", "▁?", "!"],
    [],
]


class FakeSp:
    """SentencePiece-like detokeniser: ``▁`` marks a space, leading space dropped."""

    @staticmethod
    def decode(pieces: Sequence[str]) -> str:
        return "".join(pieces).replace("▁", " ").lstrip(" ")


@needs_nemo
@pytest.mark.nemo
@pytest.mark.parametrize("pieces", PIECE_CASES)
@pytest.mark.parametrize("gap", [None, 2])
def test_words_and_segments_match_nemo(pieces: list[str], gap: int | None) -> None:
    from nemo.collections.asr.parts.utils.timestamp_utils import get_segment_offsets, get_words_offsets

    punctuation = frozenset({".", ",", "?", "!"})
    rng = np.random.default_rng(len(pieces))
    tokens, frame = [], 0
    for i in range(len(pieces)):
        duration = int(rng.integers(0, 4))
        tokens.append(DecodedToken(i, frame, duration))
        frame += duration + int(rng.integers(0, 3))
    texts = [FakeSp.decode([p]) for p in pieces]
    config = TimestampConfig(0.01, 8, punctuation, segment_gap_threshold=gap)
    spans = token_spans(tokens, pieces, texts, punctuation)

    char_offsets = [{"char": [s.text], "start_offset": s.start_offset, "end_offset": s.end_offset} for s in spans]
    encoded = [{"char": [s.piece], "start_offset": s.start_offset, "end_offset": s.end_offset} for s in spans]
    expected_words = get_words_offsets(
        char_offsets=char_offsets, encoded_char_offsets=encoded, decode_tokens_to_str=FakeSp.decode,
        word_delimiter_char=" ", tokenizer_type="bpe", supported_punctuation=set(punctuation),
    )
    words = word_spans(spans, FakeSp.decode, config)
    assert [(w.text, w.start_offset, w.end_offset) for w in words] == [
        (w["word"], w["start_offset"], w["end_offset"]) for w in expected_words
    ]
    expected_segments = get_segment_offsets(
        expected_words, segment_delimiter_tokens=[".", "?", "!"], supported_punctuation=set(punctuation),
        segment_gap_threshold=gap,
    )
    assert [(s.text, s.start_offset, s.end_offset) for s in segment_spans(words, config)] == [
        (s["segment"], s["start_offset"], s["end_offset"]) for s in expected_segments
    ]


def _spans_of(pieces: list[str]) -> tuple[TokenSpan, ...]:
    tokens = [DecodedToken(i, 2 * i, 1) for i in range(len(pieces))]
    return token_spans(tokens, pieces, [FakeSp.decode([p]) for p in pieces], frozenset({".", ",", "?", "!"}))


def test_words_and_segments_know_their_tokens() -> None:
    """A word's tokens are its pieces and the punctuation glued to it; segments split all the tokens, in order, once
    (verbose_json lists each segment's token ids)."""
    pieces = ["▁what", "▁time", "▁is", "▁it", "?", "▁the", "▁tr", "ain", ",", "▁yes", "!"]
    config = TimestampConfig(0.01, 8, frozenset({".", ",", "?", "!"}))
    words = word_spans(_spans_of(pieces), FakeSp.decode, config)
    assert [(w.text, w.first_token, w.end_token) for w in words] == [
        ("what", 0, 1), ("time", 1, 2), ("is", 2, 3), ("it?", 3, 5), ("the", 5, 6), ("train,", 6, 9), ("yes!", 9, 11)
    ]
    segments = segment_spans(words, config)
    assert [s.text for s in segments] == ["what time is it?", "the train, yes!"]
    assert segment_tokens(segments, words, len(pieces)) == [(0, 5), (5, 11)]


@pytest.mark.parametrize("pieces", PIECE_CASES)
@pytest.mark.parametrize("gap", [None, 2])
def test_segment_tokens_cover_every_token_once(pieces: list[str], gap: int | None) -> None:
    config = TimestampConfig(0.01, 8, frozenset({".", ",", "?", "!"}), segment_gap_threshold=gap)
    words = word_spans(_spans_of(pieces), FakeSp.decode, config)
    assert all(0 <= w.first_token < w.end_token <= len(pieces) for w in words)
    assert all(a.end_token <= b.first_token for a, b in itertools.pairwise(words))
    ranges = segment_tokens(segment_spans(words, config), words, len(pieces))
    covered = [i for first, end in ranges for i in range(first, end)]
    assert covered == list(range(len(pieces))) if ranges else not words


def test_punctuation_is_pinned_to_the_previous_token() -> None:
    tokens = [DecodedToken(0, 2, 3), DecodedToken(1, 9, 2), DecodedToken(2, 12, 1)]
    spans = token_spans(tokens, ["▁hi", ".", "▁yo"], ["hi", ".", "yo"], frozenset({"."}))
    assert [(s.start_offset, s.end_offset) for s in spans] == [(2, 5), (5, 5), (12, 13)]
    first = token_spans(tokens[:1], ["."], ["."], frozenset({"."}))
    assert (first[0].start_offset, first[0].end_offset) == (2, 5)


@pytest.mark.parametrize(("durations", "max_symbols", "message"), [
    ((), None, "at least one duration"), ((0, -1), None, "non-negative"), ((0, 0, 0), 10, "a positive one"),
    ((0, 1), 0, "max_symbols"),
])
def test_impossible_configs_are_refused(durations: tuple[int, ...], max_symbols: int | None, message: str) -> None:
    """Durations with no positive one keep every label on its frame (with a large ``max_symbols`` the search ran on
    without end): refused with the others."""
    with pytest.raises(ValueError, match=message):
        TdtConfig(3, durations, max_symbols)
