"""``parakeet-runtime transcribe``: output formats, several files, errors and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from parakeet_runtime.engine import Engine, sample_audio_path
from parakeet_runtime.engine.serving.cli import main


@pytest.fixture(scope="module")
def expected() -> str:
    return Engine.load().transcribe(sample_audio_path()).text


def test_default_text(capsys: pytest.CaptureFixture[str], expected: str) -> None:
    assert main(["transcribe"]) == 0
    assert capsys.readouterr().out == expected + "\n"


def test_json(capsys: pytest.CaptureFixture[str], expected: str) -> None:
    assert main(["transcribe", str(sample_audio_path()), "--format", "json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["text"] == expected
    assert payload["file"] == str(sample_audio_path())
    assert payload["words"] and {"text", "start", "end"} <= set(payload["words"][0])


def test_json_confidence_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    from parakeet_runtime.decoding import ConfidenceOptions

    assert main(["transcribe", str(sample_audio_path()), "--format", "json"]) == 0
    plain = json.loads(capsys.readouterr().out)
    assert not any("confidence" in item for key in ("tokens", "words", "segments") for item in plain[key])
    assert main(["transcribe", str(sample_audio_path()), "--format", "json", "--confidence"]) == 0
    scored = json.loads(capsys.readouterr().out)
    assert scored["text"] == plain["text"]
    with Engine.load(confidence=ConfidenceOptions()) as engine:  # the engine's own scores, rounded like times
        words = engine.transcribe(sample_audio_path()).words
    assert [w.get("confidence") for w in scored["words"]] == pytest.approx([w.confidence for w in words], abs=1e-3)
    assert all(0.0 <= t["confidence"] <= 1.0 for t in scored["tokens"])


def test_json_times_are_milliseconds(capsys: pytest.CaptureFixture[str]) -> None:
    """The Transcript keeps exact times (float noise such as ``3.7600000000000002`` included, for parity with
    NeMo); the JSON output writes every time and duration rounded to the millisecond."""
    exact = Engine.load().transcribe(sample_audio_path()).to_dict()
    raw_exact = json.dumps(exact)
    assert re.search(r"\d\.\d{4,}", raw_exact), "the sample no longer exercises rounding"
    assert main(["transcribe", str(sample_audio_path()), "--format", "json"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"\d\.\d{4,}", out) is None, out
    payload = json.loads(out)
    assert payload["duration"] == round(exact["duration"], 3)
    for key in ("segments", "words", "tokens"):
        assert len(payload[key]) == len(exact[key]) > 0
        for got, want in zip(payload[key], exact[key], strict=True):
            assert got.keys() == want.keys()
            assert {k: v for k, v in got.items() if k not in ("start", "end")} == {
                k: v for k, v in want.items() if k not in ("start", "end")
            }  # frame offsets and a token's duration in frames are integers, untouched
            assert (got["start"], got["end"]) == (round(want["start"], 3), round(want["end"], 3))


@pytest.mark.parametrize("fmt", ["srt", "vtt"])
def test_subtitles(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", str(sample_audio_path()), "--format", fmt]) == 0
    out = capsys.readouterr().out
    sep = "," if fmt == "srt" else "."
    assert re.search(rf"\d\d:\d\d:\d\d{re.escape(sep)}\d\d\d --> \d\d:\d\d:\d\d{re.escape(sep)}\d\d\d", out)
    assert out.startswith("WEBVTT\n\n" if fmt == "vtt" else "1\n")


def test_several_files_and_a_bad_one(tmp_path: Path, capsys: pytest.CaptureFixture[str], expected: str) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"nope")
    code = main(["transcribe", str(sample_audio_path()), str(bad), str(sample_audio_path()), "--format", "json"])
    captured = capsys.readouterr()
    assert code == 1
    assert "bad.wav" in captured.err and "error" in captured.err
    payload = json.loads(captured.out)
    assert [p["text"] for p in payload] == [expected, expected]


def test_missing_model_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["transcribe", "--model", str(tmp_path / "none")]) == 2
    assert "error" in capsys.readouterr().err


def test_help_says_the_default_is_a_demo_model() -> None:
    proc = subprocess.run([sys.executable, "-m", "parakeet_runtime.engine.serving.cli", "transcribe", "--help"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0
    assert "demo model" in proc.stdout and "convert-model" in proc.stdout


@pytest.mark.parametrize(("flags", "message"), [
    # each of these loaded the model and then failed with a traceback (the port after "startup complete")
    (["serve", "--max-batch-size", "0"], "--max-batch-size must be an integer >= 1, got 0"),
    (["serve", "--max-wait-ms", "-1"], "--max-wait-ms must be"),
    (["serve", "--max-wait-ms", "nan"], "--max-wait-ms must be"),
    (["serve", "--max-upload-mb", "0"], "--max-upload-mb must be a positive number"),
    (["serve", "--port", "99999"], "--port must be between 0 and 65535"),
    (["serve", "--chunk-s", "inf"], "--chunk-s must be a positive number"),
    (["transcribe", "--chunk-s", "0", "x.wav"], "--chunk-s must be a positive number"),
    (["transcribe", "--batch-size", "0", "x.wav"], "--batch-size must be an integer >= 1, got 0"),
    (["transcribe", "--threads", "0", "x.wav"], "--threads must be an integer >= 1, got 0"),
    (["serve", "--max-in-flight", "0"], "--max-in-flight must be an integer >= 1, got 0"),
    (["serve", "--precision", "bf16"], "--precision bf16 needs --backend openvino"),
])
def test_bad_numbers_are_usage_errors(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(flags)
    assert exited.value.code == 2
    assert message in capsys.readouterr().err
