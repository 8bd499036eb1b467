"""Subtitle cues: a segment is split at word boundaries into cues a reader can follow."""

from __future__ import annotations

import re
from pathlib import Path

from parakeet_runtime.engine import Engine, TimedText, Transcript, sample_audio_path
from parakeet_runtime.engine.serving.formats import CUE_CHARACTERS, CUE_SECONDS, cues, to_srt, to_vtt

FRAME = 0.08


def _words(texts: list[str], gap: int = 1, length: int = 5) -> tuple[TimedText, ...]:
    words = []
    offset = 0
    for text in texts:
        words.append(TimedText(text, offset, offset + length, offset * FRAME, (offset + length) * FRAME))
        offset += length + gap
    return tuple(words)


def _transcript(words: tuple[TimedText, ...], segments: int = 1) -> Transcript:
    size = -(-len(words) // segments)
    parts = [words[i : i + size] for i in range(0, len(words), size)]
    spans = tuple(TimedText(" ".join(w.text for w in p), p[0].start_offset, p[-1].end_offset, p[0].start, p[-1].end)
                  for p in parts)
    return Transcript(text=" ".join(s.text for s in spans), duration=words[-1].end + 1, words=words, segments=spans)


def test_a_long_segment_becomes_readable_cues() -> None:
    texts = [f"word{i}" for i in range(120)]  # one segment of about 58 s
    transcript = _transcript(_words(texts))
    found = cues(transcript)
    assert len(found) > 8
    assert all(end - start <= CUE_SECONDS + 1e-9 and len(text) <= CUE_CHARACTERS for start, end, text in found)
    assert " ".join(text for _, _, text in found) == transcript.segments[0].text  # every word once, in order
    starts = [start for start, _, _ in found]
    assert starts == sorted(starts) and found[0][0] == transcript.words[0].start
    assert found[-1][1] == transcript.words[-1].end


def test_cues_never_cross_segments_and_short_segments_stay_whole() -> None:
    transcript = _transcript(_words([f"w{i}" for i in range(12)]), segments=3)
    found = cues(transcript)
    assert [text for _, _, text in found] == [s.text for s in transcript.segments]


def test_one_long_word_is_a_cue_of_its_own() -> None:
    words = _words(["a", "x" * 100, "b"], length=3)
    found = cues(_transcript(words))
    assert [text for _, _, text in found] == ["a", "x" * 100, "b"]


def test_a_transcript_without_segments_uses_its_words() -> None:
    words = _words([f"w{i}" for i in range(40)])
    transcript = Transcript(text=" ".join(w.text for w in words), duration=30.0, words=words)
    found = cues(transcript)
    assert " ".join(text for _, _, text in found) == transcript.text and len(found) > 1
    assert cues(Transcript(text="", duration=1.0)) == []


def test_srt_and_vtt_of_a_real_transcript() -> None:
    with Engine.load() as engine:
        transcript = engine.transcribe(sample_audio_path())
    srt, vtt = to_srt(transcript), to_vtt(transcript)
    blocks = srt.strip().split("\n\n")
    assert len(blocks) == len(cues(transcript)) >= 1
    for number, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(number)
        assert re.fullmatch(r"\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}", lines[1])
        assert 1 <= len(lines[2:]) <= 2 and all(len(line) <= 42 or " " not in line for line in lines[2:])
    assert vtt.startswith("WEBVTT\n\n") and vtt.count(" --> ") == len(blocks)
    assert " ".join(" ".join(b.split("\n")[2:]) for b in blocks) == transcript.text


def test_no_cue_without_text() -> None:
    """A segment whose only word has no text (a lone word-boundary token, which NeMo emits on silence) made a
    cue with an empty text line, which subtitle parsers refuse."""
    empty_word = TimedText("", 10, 11, 10 * FRAME, 11 * FRAME)
    transcript = Transcript(text="", duration=2.0, words=(empty_word,), segments=(empty_word,))
    assert cues(transcript) == []
    assert to_srt(transcript) == "" and to_vtt(transcript) == "WEBVTT\n\n"


def test_vtt_cue_text_is_escaped() -> None:
    words = _words(["a<b", "c&d", "-->"])
    vtt = to_vtt(_transcript(words))
    assert "a&lt;b c&amp;d --&gt;" in vtt and vtt.count("-->") == 1  # only the timing's arrow
    assert "a<b c&d -->" in to_srt(_transcript(words))  # SubRip has no escapes


def test_a_word_of_no_duration_on_a_segment_border_is_in_its_own_segments_cue_only() -> None:
    """Both segments' spans hold a zero-length word at their shared frame: it was written in both cues."""
    def word(text: str, start: int, end: int) -> TimedText:
        return TimedText(text, start, end, start * FRAME, end * FRAME)

    words = (word("hello", 0, 5), word("there.", 5, 10), word("a", 10, 10), word("dog", 10, 14))
    segments = (word("hello there.", 0, 10), word("a dog", 10, 14))
    transcript = Transcript(text="hello there. a dog", duration=2.0, words=words, segments=segments)
    assert [text for _, _, text in cues(transcript)] == ["hello there.", "a dog"]
    assert to_srt(transcript).count("\na") == 1


def test_partial_subtitles_split_segments_as_the_complete_ones(tmp_path: Path) -> None:
    """The batch CLI's .partial files of a long input follow the same word grouping as the final output."""
    from parakeet_runtime.engine import TranscriptUpdate
    from parakeet_runtime.engine.serving.batch import OutputPlan, PartialWriter
    from parakeet_runtime.engine.serving.inputs import collect_inputs

    def word(text: str, start: int, end: int) -> TimedText:
        return TimedText(text, start, end, start * FRAME, end * FRAME)

    words = (word("hello", 0, 5), word("there.", 5, 10), word("a", 10, 10), word("dog.", 10, 14), word("x", 20, 22))
    segments = (word("hello there.", 0, 10), word("a dog.", 10, 14), word("x", 20, 22))
    whole = Transcript(text="hello there. a dog. x", duration=2.0, words=words, segments=segments)
    source = tmp_path / "in.wav"
    source.write_bytes(b"")
    (item,) = collect_inputs([str(source)], [], unique=True)
    plan = OutputPlan(tmp_path / "out", ("srt",))
    writer = PartialWriter(plan)
    state: dict[str, object] = {}
    writer.update(item, TranscriptUpdate(words[:2], segments[:1], 1.0, 2.0, None), state)
    writer.update(item, TranscriptUpdate(words[2:4], segments[1:2], 1.5, 2.0, None), state)
    partial = writer.partial_path(plan.paths(item)["srt"]).read_text(encoding="utf-8")
    assert to_srt(whole).startswith(partial.rstrip("\n"))
    assert partial.count("\na") == 1 and "2\n" in partial
