"""Audio input: formats, sample rates, channels, PCM types, and typed errors for bad input."""

from __future__ import annotations

import io
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import AudioDecodeError, AudioFileNotFoundError, AudioTooLongError, load_audio
from tests.conftest import wav_declaring

RATE = 16000


def _tone(seconds: float, rate: int, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


@pytest.mark.parametrize(("fmt", "subtype"), [("WAV", "PCM_16"), ("WAV", "FLOAT"), ("FLAC", "PCM_24"),
                                              ("OGG", "VORBIS")])
def test_reads_common_formats(tmp_path: Path, fmt: str, subtype: str) -> None:
    path = tmp_path / f"tone.{fmt.lower()}"
    soundfile.write(path, _tone(1.0, RATE), RATE, format=fmt, subtype=subtype)
    audio = load_audio(path, RATE)
    assert audio.sample_rate == RATE
    assert audio.samples.dtype == np.float32
    assert abs(audio.samples.shape[0] - RATE) <= 1024  # lossy codecs may pad
    assert 0.3 < float(np.max(np.abs(audio.samples))) < 0.6


def test_bytes_and_path_agree(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    soundfile.write(path, _tone(0.7, RATE), RATE, subtype="PCM_16")
    from_path = load_audio(path, RATE)
    from_bytes = load_audio(path.read_bytes(), RATE)
    from_str = load_audio(str(path), RATE)
    np.testing.assert_array_equal(from_path.samples, from_bytes.samples)
    np.testing.assert_array_equal(from_path.samples, from_str.samples)


@pytest.mark.parametrize("rate", [8000, 22050, 44100, 48000])
def test_other_rates_are_resampled(tmp_path: Path, rate: int) -> None:
    path = tmp_path / "r.wav"
    soundfile.write(path, _tone(1.5, rate, 300.0), rate)
    audio = load_audio(path, RATE)
    assert audio.sample_rate == RATE
    assert abs(audio.samples.shape[0] - int(1.5 * RATE)) <= 1
    reference = _tone(1.5, RATE, 300.0)
    n = min(len(reference), len(audio.samples))
    # Band-limited resampling of a 300 Hz tone: the middle agrees closely with the tone at 16 kHz.
    assert float(np.max(np.abs(audio.samples[2000 : n - 2000] - reference[2000 : n - 2000]))) < 1e-2


def test_array_with_rate_matches_file(tmp_path: Path) -> None:
    tone = _tone(1.0, 44100)
    path = tmp_path / "t.wav"
    soundfile.write(path, tone, 44100, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio((tone, 44100), RATE).samples, load_audio(path, RATE).samples)
    np.testing.assert_array_equal(load_audio(tone, RATE, sample_rate=44100).samples, load_audio(path, RATE).samples)


def test_multichannel_is_averaged(tmp_path: Path) -> None:
    left, right = _tone(1.0, RATE, 200.0), _tone(1.0, RATE, 500.0)
    stereo = np.stack([left, right], axis=1)
    path = tmp_path / "s.wav"
    soundfile.write(path, stereo, RATE, subtype="FLOAT")
    np.testing.assert_allclose(load_audio(path, RATE).samples, (left + right) / 2, atol=1e-7)
    np.testing.assert_allclose(load_audio(stereo, RATE).samples, (left + right) / 2, atol=1e-7)


def test_integer_pcm_is_scaled() -> None:
    int16 = np.array([0, 16384, -32768, 32767], dtype=np.int16)
    np.testing.assert_allclose(load_audio(int16, RATE).samples, [0.0, 0.5, -1.0, 32767 / 32768])
    int32 = np.array([0, 2**30, -(2**31)], dtype=np.int32)
    np.testing.assert_allclose(load_audio(int32, RATE).samples, [0.0, 0.5, -1.0])
    uint8 = np.array([128, 192, 0], dtype=np.uint8)
    np.testing.assert_allclose(load_audio(uint8, RATE).samples, [0.0, 0.5, -1.0])


def test_int16_file_matches_int16_array(tmp_path: Path) -> None:
    pcm = (np.random.default_rng(0).standard_normal(5000) * 3000).astype(np.int16)
    path = tmp_path / "i.wav"
    soundfile.write(path, pcm, RATE, subtype="PCM_16")
    np.testing.assert_array_equal(load_audio(path, RATE).samples, load_audio(pcm, RATE).samples)


def test_missing_file_is_typed(tmp_path: Path) -> None:
    with pytest.raises(AudioFileNotFoundError) as info:
        load_audio(tmp_path / "nope.wav", RATE)
    assert isinstance(info.value, FileNotFoundError)
    assert isinstance(info.value, AudioDecodeError)
    assert "nope.wav" in str(info.value)


@pytest.mark.parametrize(
    "content",
    [b"", b"this is not audio at all\n" * 20, b"RIFF\x24\x00\x00\x00WAVEfmt ", bytes(range(256)) * 8],
    ids=["empty", "text", "truncated-header", "binary"],
)
def test_undecodable_files_are_typed(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioDecodeError, match=r"bad\.wav"):
        load_audio(path, RATE)
    with pytest.raises(AudioDecodeError):
        load_audio(content, RATE)


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"just some text, not audio\n" * 20, "Format not recognised"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt ", "No 'data' chunk marker"),
        (b"fLaC" + bytes(60), "unimplemented format"),
    ],
    ids=["text", "truncated-header", "flac-magic"],
)
def test_bytes_errors_say_why_without_reprs(content: bytes, reason: str) -> None:
    """soundfile's own text names the ``BytesIO`` it was handed (``<_io.BytesIO object at 0x...>``); the error
    says how many bytes were given and libsndfile's reason instead, and keeps soundfile's error as the cause."""
    with pytest.raises(AudioDecodeError) as info:
        load_audio(content, RATE)
    message = str(info.value)
    assert f"{len(content)} bytes of encoded audio" in message
    assert reason in message
    assert re.search(r"0x[0-9a-fA-F]+|object at|BytesIO", message) is None, message
    assert isinstance(info.value.__cause__, soundfile.LibsndfileError)


def test_path_errors_name_the_path_once(tmp_path: Path) -> None:
    path = tmp_path / "notes.wav"
    path.write_text("not audio")
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, RATE)
    assert str(info.value) == f"cannot decode audio from {path}: Format not recognised"


def test_an_empty_file_says_it_is_empty(tmp_path: Path) -> None:
    """A zero-byte file (a recording that never started, a failed upload) says so; libsndfile's own reason,
    "Format not recognised", sent users looking for a codec problem."""
    path = tmp_path / "empty.wav"
    path.write_bytes(b"")
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, RATE)
    assert str(info.value) == f"cannot decode audio from {path}: the file is empty (0 bytes)"


def test_empty_bytes_say_they_are_empty() -> None:
    """Zero bytes (an upload that sent nothing) say so, as an empty file does; they said libsndfile's "Format not
    recognised"."""
    with pytest.raises(AudioDecodeError) as info:
        load_audio(b"", RATE)
    assert str(info.value) == "cannot decode audio from 0 bytes of encoded audio: the file is empty"


def test_directory_is_typed(tmp_path: Path) -> None:
    with pytest.raises(AudioDecodeError, match="directory"):
        load_audio(tmp_path, RATE)


def test_truncated_wav_data_still_reads_what_is_there(tmp_path: Path) -> None:
    """A WAV cut short (its header claims more samples than the file holds) gives every whole sample it holds."""
    buffer = io.BytesIO()
    soundfile.write(buffer, _tone(1.0, RATE), RATE, format="WAV", subtype="PCM_16")
    data = buffer.getvalue()
    path = tmp_path / "cut.wav"
    path.write_bytes(data[: len(data) // 2 + 1])
    whole = load_audio(data, RATE).samples
    held = (len(data) // 2 + 1 - data.index(b"data") - 8) // 2  # 16-bit samples after the data chunk's header
    np.testing.assert_array_equal(load_audio(path, RATE).samples, whole[:held])


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((2, 3, 4), dtype=np.float32),
        np.array([1 + 2j, 3j]),
        np.array(["a", "b"]),
        np.array([True, False]),
        np.array([0.0, np.nan], dtype=np.float32),
        np.array([0.0, np.inf]),
    ],
    ids=["3d", "complex", "strings", "bool", "nan", "inf"],
)
def test_bad_arrays_are_typed(bad: np.ndarray) -> None:
    with pytest.raises(AudioDecodeError):
        load_audio(bad, RATE)


@pytest.mark.parametrize("bad", [(np.zeros(10), "16000"), (np.zeros(10), 0), (np.zeros(10), -8000),
                                 (np.zeros(10), True), (np.zeros(10),), 12345, None, [0.0, 0.1]])
def test_bad_inputs_are_typed(bad: object) -> None:
    with pytest.raises(AudioDecodeError):
        load_audio(bad, RATE)  # type: ignore[arg-type]


# --- block by block ---------------------------------------------------------------------------------------


def test_a_long_stereo_file_is_read_block_by_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blocks of a few seconds, mixed and resampled as they come: the same samples as reading everything at
    once (and resampling it as NeMo does: ``scipy.signal.resample_poly``), without the file ever being one array
    at its source rate and channel count."""
    from scipy.signal import resample_poly

    from parakeet_runtime.engine.requests import audio as audio_module

    rate = 44100
    seconds = 3 * audio_module.BLOCK_FRAMES / rate + 0.37  # four blocks, the last one partial
    rng = np.random.default_rng(0)
    stereo = (0.2 * rng.standard_normal((int(seconds * rate), 2))).astype(np.float32)
    path = tmp_path / "long.flac"
    soundfile.write(path, stereo, rate, subtype="PCM_24")
    whole, _ = soundfile.read(path, dtype="float32", always_2d=True)
    expected = resample_poly(whole.mean(axis=1, dtype=np.float32), 160, 441)

    reads: list[int] = []
    original = audio_module._read_block

    def counted(audio_file: soundfile.SoundFile, frames: int) -> np.ndarray:
        assert 0 < frames <= audio_module.BLOCK_FRAMES, "read everything at once"
        reads.append(frames)
        return original(audio_file, frames)

    monkeypatch.setattr(audio_module, "_read_block", counted)
    got = load_audio(path, RATE).samples
    assert len(reads) == 4
    assert got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_an_undecodable_file_fails_in_its_first_block(tmp_path: Path) -> None:
    """A valid header over garbage data: the first block read fails, with a typed error."""
    path = tmp_path / "broken.flac"
    soundfile.write(path, _tone(30.0, RATE), RATE, format="FLAC")
    data = bytearray(path.read_bytes())
    data[200:] = bytes(len(data) - 200)  # frames replaced by zeros
    path.write_bytes(bytes(data))
    with pytest.raises(AudioDecodeError):
        load_audio(path, RATE)


# --- WAVs whose writer never finished the header ------------------------------------------------------------


def _unfinished(finished: bytes, riff_size: int) -> bytes:
    """``finished`` as a writer streaming to a pipe leaves it: the RIFF size as given and a ``data`` size of 0."""
    data = finished.index(b"data")
    return (finished[:4] + struct.pack("<I", riff_size) + finished[8 : data + 4] + struct.pack("<I", 0)
            + finished[data + 8 :])


@pytest.mark.parametrize("riff_size", [0, 36, 0xFFFFFFFF], ids=["riff-0", "riff-header-only", "riff-max"])
@pytest.mark.parametrize("block_frames", [None, 4096], ids=["one-block", "blocks"])
def test_a_wav_with_an_unfinished_data_size_is_read_to_its_end(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                riff_size: int, block_frames: int | None) -> None:
    """A data chunk of size 0 with audio after it (a WAV streamed to a pipe) holds the audio up to the end of
    the file, as FFmpeg reads it: not no audio at all (libsndfile's reading, which transcribed it as "")."""
    from parakeet_runtime.engine.requests import audio as audio_module

    if block_frames is not None:
        monkeypatch.setattr(audio_module, "BLOCK_FRAMES", block_frames)
    buffer = io.BytesIO()
    rng = np.random.default_rng(0)
    stereo = (0.2 * rng.standard_normal((24000, 2))).astype(np.float32)
    soundfile.write(buffer, stereo, 48000, format="WAV", subtype="PCM_24")
    expected = load_audio(buffer.getvalue(), RATE).samples
    assert expected.shape == (8000,)
    unfinished = _unfinished(buffer.getvalue(), riff_size)
    path = tmp_path / "streamed.wav"
    path.write_bytes(unfinished)
    np.testing.assert_array_equal(load_audio(path, RATE).samples, expected)
    np.testing.assert_array_equal(load_audio(unfinished, RATE).samples, expected)
    with pytest.raises(AudioTooLongError):  # its length is known from the file's size, before decoding
        load_audio(path, RATE, max_seconds=0.4)


def _wav(seconds: float, rate: int, channels: int = 1, subtype: str = "PCM_16", seed: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    samples = (0.2 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32).squeeze()
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype=subtype)
    return buffer.getvalue()


@pytest.mark.parametrize("subtype", ["PCM_U8", "ULAW", "PCM_16"])
def test_an_understated_wav_is_read_whole_wherever_its_header_cuts_it(subtype: str) -> None:
    """Whatever bytes the undeclared audio begins with (8-bit and companded samples are often printable, like a
    chunk's name), it is read, with a warning."""
    wav = _wav(0.5, RATE, subtype=subtype, seed=5)
    expected = load_audio(wav, RATE).samples
    audio_bytes = len(wav) - wav.index(b"data") - 8
    for declared in range(100, audio_bytes - 200, 97):
        got = load_audio(wav_declaring(wav, declared), RATE)
        np.testing.assert_array_equal(got.samples, expected)
        assert len(got.warnings) == 1


@pytest.mark.parametrize("tail", ["riff-text-in-an-id3v2-tag", "mp3-frames"])
def test_a_wav_followed_by_what_is_not_its_audio_is_read_as_its_header_says(tail: str) -> None:
    """After an honest data chunk: an ID3v2 tag quoting a RIFF header in its text (no second file), or an MP3
    appended without a tag (another kind of file: not this WAV's samples, as soundfile reads it)."""
    wav = _wav(1.0, RATE)
    if tail == "mp3-frames":
        buffer = io.BytesIO()
        soundfile.write(buffer, np.zeros(8000, dtype=np.float32), RATE, format="MP3", subtype="MPEG_LAYER_III")
        after = buffer.getvalue()
    else:
        after = b"ID3\x04\x00\x00\x00\x00\x01\x00" + b"TXXX quoting RIFF1234WAVEfmt ".ljust(128, b"x")
    got = load_audio(wav + after, RATE)
    np.testing.assert_array_equal(got.samples, load_audio(wav, RATE).samples)
    assert got.warnings == ()


@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_a_wav_whose_data_size_understates_its_audio_is_read_to_the_end(tmp_path: Path, as_path: bool) -> None:
    """A recorder that updated its header now and then and died, a tool that appended samples without fixing the
    header: libsndfile stops at the declared size without a word (half the recording lost). The audio after it is
    read too (it is not another chunk), with a warning that gives both lengths."""
    wav = _wav(3.0, RATE, subtype="PCM_24")
    short = wav_declaring(wav, 3 * RATE)  # 1 s of 24-bit mono
    source: Path | bytes = short
    if as_path:
        source = tmp_path / "understated.wav"
        source.write_bytes(short)
    got = load_audio(source, RATE)
    np.testing.assert_array_equal(got.samples, load_audio(wav, RATE).samples)
    (warning,) = got.warnings
    assert "declares 1.00 s of audio" in warning and "3.00 s" in warning


@pytest.mark.parametrize("tail", ["none", "list-chunk", "list-chunk-unpadded", "list-chunk-cut-short", "id3v1",
                                  "a-few-bytes", "zeros", "0xff", "line-ends", "id3v2"])
def test_what_may_follow_a_wavs_data_is_not_read_as_audio(tail: str) -> None:
    """An honest data chunk followed by another chunk (padded as the standard says, or not: a common slip; whole or
    cut short), an ID3v1 or ID3v2 tag, padding (zeros, 0xFF, line ends) or a few stray bytes: the audio is the data
    chunk's, and nothing is said."""
    wav = _wav(1.0, RATE)
    expected = load_audio(wav, RATE).samples
    if tail == "list-chunk-unpadded":  # an odd-sized data chunk whose writer forgot the pad byte
        wav = wav_declaring(wav[:-1], len(wav) - wav.index(b"data") - 9)
        expected = load_audio(wav, RATE).samples
    info = b"INFOISFT\x06\x00\x00\x00probe\x00"
    tails = {"none": b"", "list-chunk": b"LIST" + struct.pack("<I", len(info)) + info,
             "list-chunk-unpadded": b"LIST" + struct.pack("<I", len(info)) + info,
             "list-chunk-cut-short": b"LIST" + struct.pack("<I", 500) + info.ljust(100, b"\0"),
             "id3v1": b"TAG" + b"a title".ljust(125, b"\0"), "a-few-bytes": bytes(10), "zeros": bytes(4096),
             "0xff": b"\xff" * 200, "line-ends": b"\r\n" * 100,
             "id3v2": b"ID3\x04\x00\x00\x00\x00\x01\x00" + bytes(128)}
    got = load_audio(wav + tails[tail], RATE)
    np.testing.assert_array_equal(got.samples, expected)
    assert got.warnings == ()


@pytest.mark.parametrize("cut", range(12, 36))
def test_a_wav_cut_inside_its_header_is_a_typed_error(cut: int) -> None:
    """A WAV cut anywhere in its header (inside the ``fmt`` chunk, before the audio): ``AudioDecodeError``, never an
    untyped exception from the header walk."""
    with pytest.raises(AudioDecodeError):
        load_audio(_wav(0.5, RATE)[:cut], RATE)


def test_an_empty_wav_with_a_chunk_after_its_data_stays_empty() -> None:
    """A data chunk of size 0 followed by another chunk really is empty: the chunk is not read as audio."""
    buffer = io.BytesIO()
    soundfile.write(buffer, np.zeros(0, dtype=np.float32), RATE, format="WAV", subtype="PCM_16")
    info = b"INFOISFT\x06\x00\x00\x00probe\x00"
    with_list = buffer.getvalue() + b"LIST" + struct.pack("<I", len(info)) + info
    with_list = with_list[:4] + struct.pack("<I", len(with_list) - 8) + with_list[8:]
    assert load_audio(with_list, RATE).samples.shape == (0,)
    assert load_audio(buffer.getvalue(), RATE).samples.shape == (0,)
