"""Audio that libsndfile alone loses or refuses: chained Ogg streams (it decoded only the first, silently), FLAC
files cut short at their end (refused entirely: "flac decoder lost sync"), and files holding less than their header
declares. Every chained stream is decoded; a cut FLAC gives the audio before the cut with a warning, while one
damaged in the middle is still refused."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import (
    AudioDecodeError,
    AudioTooLongError,
    BatchingOptions,
    Engine,
    LongFormOptions,
    load_audio,
    sample_audio_path,
)
from parakeet_runtime.engine.requests import audio as audio_module
from parakeet_runtime.engine.requests.flac import flac_info, frame_sample, frames_total, last_frame_sample
from parakeet_runtime.engine.requests.mpeg import frame_at
from parakeet_runtime.engine.requests.ogg import ByteRange, ogg_layout
from tests.conftest import wav_declaring

RATE = 16000
AUDIO_LOGGER = "parakeet_runtime.engine.requests.audio"


def _noise(seconds: float, rate: int, seed: int, channels: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (0.2 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32).squeeze()


def _encoded(samples: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _pages(data: bytes) -> list[bytes]:
    """The pages of an Ogg file, whole (header, segment table and body)."""
    pages, offset = [], 0
    while offset < len(data):
        assert data[offset : offset + 4] == b"OggS"
        segments = data[offset + 26]
        length = 27 + segments + sum(data[offset + 27 : offset + 27 + segments])
        pages.append(data[offset : offset + length])
        offset += length
    return pages


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == AUDIO_LOGGER and r.levelno >= logging.WARNING]


# --- chained Ogg ------------------------------------------------------------------------------------------


CHAINS = {
    "vorbis": [(16000, "VORBIS", 1.3), (16000, "VORBIS", 0.9)],
    "opus": [(48000, "OPUS", 1.1), (48000, "OPUS", 1.6), (48000, "OPUS", 0.7)],
    "mixed-rates-and-codecs": [(44100, "VORBIS", 1.2), (16000, "OPUS", 0.8), (22050, "VORBIS", 1.0)],
}


def _links(name: str, channels: int = 1) -> list[bytes]:
    return [_encoded(_noise(seconds, rate, seed, channels), rate, "OGG", subtype)
            for seed, (rate, subtype, seconds) in enumerate(CHAINS[name])]


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_every_chained_ogg_stream_is_decoded_in_order(tmp_path: Path, name: str) -> None:
    """``cat a.ogg b.ogg``: libsndfile decoded ``a`` and reported the end of the file, so ``b`` was lost without an
    error. Each link is now decoded (and resampled from its own rate) and the samples joined."""
    links = _links(name)
    expected = np.concatenate([load_audio(link, RATE).samples for link in links])
    chained = b"".join(links)
    path = tmp_path / "chained.ogg"
    path.write_bytes(chained)
    assert soundfile.info(io.BytesIO(chained)).frames < sum(soundfile.info(io.BytesIO(x)).frames for x in links)
    np.testing.assert_array_equal(load_audio(chained, RATE).samples, expected)
    np.testing.assert_array_equal(load_audio(path, RATE).samples, expected)


def test_a_chained_ogg_is_read_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each link is decoded in blocks of at most ``BLOCK_FRAMES``, as any file is: a long chain never sits in memory
    at its source rates."""
    links = _links("mixed-rates-and-codecs", channels=2)
    expected = np.concatenate([load_audio(link, RATE).samples for link in links])
    monkeypatch.setattr(audio_module, "BLOCK_FRAMES", 4096)
    reads: list[int] = []
    original = audio_module._read_block

    def counted(audio_file: soundfile.SoundFile, frames: int) -> np.ndarray:
        assert 0 < frames <= 4096
        reads.append(frames)
        return original(audio_file, frames)

    monkeypatch.setattr(audio_module, "_read_block", counted)
    got = load_audio(b"".join(links), RATE).samples
    assert len(reads) > 3 * len(links)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-6)


def test_a_chain_of_many_short_links_grows_its_buffer_geometrically() -> None:
    """A chained Ogg file of thousands of tiny links (a hostile upload costs nothing to make: ``cat`` one short file
    many times) reserved exactly each link's declared length, copying everything decoded so far once per link: a
    10,000-link, 34 MB Vorbis chain took 13.5 s where 1,000 links took 0.54 s. Later parts now at least double the
    buffer, so the copies stay logarithmic in the number of links; the samples are the same."""
    samples = audio_module._Samples()
    buffer, copies = samples._data, 0
    blocks = [np.full(160, k, dtype=np.float32) for k in range(2000)]
    for block in blocks:
        samples.reserve(block.shape[0])
        samples.append(block)
        if samples._data is not buffer:
            buffer, copies = samples._data, copies + 1
    assert copies <= 16  # log2(2000) + a few; was one per link
    np.testing.assert_array_equal(samples.array(), np.concatenate(blocks))
    single = audio_module._Samples()
    single.reserve(1000)
    single.append(np.ones(1000, dtype=np.float32))
    assert single._data.shape[0] == 1000  # a lone file still gets exactly its declared length


def test_every_link_counts_against_max_seconds() -> None:
    """Links of 1.1 s, 1.6 s and 0.7 s: each is within 2 s, the chain is not. The link that would pass the limit is
    refused from its declared length, before it is decoded."""
    chained = b"".join(_links("opus"))
    assert load_audio(chained, RATE, max_seconds=3.5).duration == pytest.approx(3.4, abs=0.01)
    with pytest.raises(AudioTooLongError, match=r"2\.7 s is longer than the 2 s"):
        load_audio(chained, RATE, max_seconds=2.0)


def test_a_chain_with_a_multiplexed_link_is_refused() -> None:
    """A link that begins several logical streams at once (video with audio, say) is not a chain of audio
    streams: refused with a typed error that says so, not decoded in part."""
    first, second, third = [*_links("vorbis"), _encoded(_noise(0.5, RATE, 9), RATE, "OGG", "VORBIS")]
    a, b = _pages(second), _pages(third)
    multiplexed = a[0] + b[0] + b"".join(a[1:]) + b"".join(b[1:])  # both beginning-of-stream pages first
    assert [link.streams for link in ogg_layout(io.BytesIO(first + multiplexed)).links] == [1, 2]
    with pytest.raises(AudioDecodeError, match=r"chained Ogg stream 2 of 2 \(from byte \d+\) multiplexes 2 logical"):
        load_audio(first + multiplexed, RATE)


def test_a_lone_multiplexed_ogg_is_left_to_libsndfile() -> None:
    """Not a chain: read as libsndfile reads it (as before), not refused as one."""
    a, b = _pages(_links("vorbis")[0]), _pages(_encoded(_noise(0.5, RATE, 9), RATE, "OGG", "VORBIS"))
    multiplexed = a[0] + b[0] + b"".join(a[1:]) + b"".join(b[1:])
    assert [link.streams for link in ogg_layout(io.BytesIO(multiplexed)).links] == [2]
    try:
        expected: object = soundfile.read(io.BytesIO(multiplexed), dtype="float32")[0].shape[0]
    except (soundfile.LibsndfileError, RuntimeError):
        expected = AudioDecodeError
    try:
        got: object = load_audio(multiplexed, RATE).samples.shape[0]
    except AudioDecodeError as exc:
        assert "chained" not in str(exc)
        got = AudioDecodeError
    assert got == expected


def test_damage_between_links_does_not_hide_the_next_one() -> None:
    """Junk between two links, holding a stray capture pattern that looks like a beginning-of-stream page, is
    stepped over as libogg does: the next link is still found where it really begins, and the stray pattern (no
    page follows where it says it ends) splits nothing."""
    first, second = _links("vorbis")
    stray = b"OggS\x00\x02" + bytes(20) + b"\x01\x40" + bytes(64)  # "begins a stream", a 64-byte body, then junk
    layout = ogg_layout(io.BytesIO(first + b"junk" + stray + b"more junk" + second))
    assert [link.start for link in layout.links] == [0, len(first) + 4 + len(stray) + 9]
    assert not layout.cut_short


def test_a_stream_at_the_end_of_a_page_body_is_not_a_link() -> None:
    """The walk steps from page to page by their lengths: ``OggS`` inside a page's body is not looked at."""
    pages = _pages(_links("vorbis")[0])
    assert len(ogg_layout(io.BytesIO(b"".join(pages))).links) == 1
    assert all(page.count(b"OggS") == 1 for page in pages)


@pytest.mark.parametrize("cut", [0.5, 0.97])
def test_an_ogg_cut_short_is_read_to_its_last_whole_page_with_a_warning(caplog: pytest.LogCaptureFixture,
                                                                       cut: float) -> None:
    """libsndfile decodes what the complete pages of a cut Ogg file hold, and said nothing; now a warning says it
    was cut short. A whole file, chained or not, gives no warning."""
    whole = _encoded(_noise(20.0, 48000, 3), 48000, "OGG", "OPUS")
    with caplog.at_level(logging.WARNING, logger=AUDIO_LOGGER):
        load_audio(whole, RATE)
        load_audio(b"".join(_links("opus")), RATE)
        assert _warnings(caplog) == []
        got = load_audio(whole[: int(len(whole) * cut)], RATE)
    assert 0 < got.duration < 20.0 * cut
    assert len(_warnings(caplog)) == 1 and "Ogg data is cut short" in _warnings(caplog)[0]


def _long_link() -> bytes:
    return _encoded(_noise(12.0, RATE, 21), RATE, "OGG", "VORBIS")


@pytest.mark.parametrize("where", [0.4, 0.75])
def test_a_link_cut_inside_a_page_does_not_swallow_the_next(where: float) -> None:
    """A first link cut inside a page, then a whole second one: the cut page's segment table claims bytes of the second
    link, and the walk stepped over its beginning: one link, the second lost without a word (and the first's tail).
    Pages now count only with their CRC: both links are found, the second decodes whole, and the first says it ended
    without its last page."""
    first, second = _long_link(), _links("vorbis")[1]
    cut = first[: int(len(first) * where)]
    layout = ogg_layout(io.BytesIO(cut + second))
    assert [link.start for link in layout.links] == [0, len(cut)] and not layout.links[0].ended
    audio = load_audio(cut + second, RATE)
    tail = load_audio(second, RATE).samples
    np.testing.assert_allclose(audio.samples[-tail.shape[0]:], tail, rtol=0, atol=1e-6)
    assert len(audio.warnings) == 1 and "stream 1 of 2" in audio.warnings[0] and "without its" in audio.warnings[0]


def test_a_link_cut_at_a_page_boundary_says_so() -> None:
    """Cut between two pages of the first link: nothing to resynchronise, but the link has no end-of-stream page,
    so its missing tail is no longer silent."""
    pages = _pages(_long_link())
    second = _links("vorbis")[1]
    audio = load_audio(b"".join(pages[: len(pages) // 2]) + second, RATE)
    assert len(audio.warnings) == 1 and "ends without its stream's last page" in audio.warnings[0]


def test_a_flipped_bit_in_a_page_header_neither_splits_nor_refuses() -> None:
    """A beginning-of-stream flag set by one flipped bit on a middle page made a second "link" that libsndfile
    refused, losing the whole file; its CRC is now wrong, so the page is damage (libogg drops it too). A damaged last
    page (its end-of-stream flag no longer trusted) says the file may be cut short."""
    data = _long_link()
    pages = _pages(data)
    middle = sum(len(page) for page in pages[: len(pages) // 2])
    flipped = bytearray(data)
    flipped[middle + 5] |= 0x02
    assert len(ogg_layout(io.BytesIO(bytes(flipped))).links) == 1
    assert load_audio(bytes(flipped), RATE).duration > 10.0
    last = bytearray(data)
    last[len(data) - len(pages[-1]) + 14] ^= 1  # the last page's serial number
    audio = load_audio(bytes(last), RATE)
    assert audio.duration < 12.0 and len(audio.warnings) == 1 and "cut short" in audio.warnings[0]


def test_a_link_libsndfile_cannot_open_is_skipped_with_a_warning() -> None:
    """A link that is only a beginning-of-stream page and a cut one (libsndfile: "malformed") refused the whole
    chain; the other links' audio is now kept, and the transcript says which link was skipped. A chain of nothing
    but such links is refused."""
    first, second = _links("vorbis")
    broken = _links("opus")[0][:200]
    audio = load_audio(first + broken + second, RATE)
    assert audio.duration == pytest.approx(load_audio(first + second, RATE).duration)
    assert any("stream 2 of 3" in w and "skipped" in w for w in audio.warnings)
    with pytest.raises(AudioDecodeError):
        load_audio(broken + broken, RATE)


def test_the_walk_reads_each_window_once_while_resynchronising() -> None:
    """A crafted file of fake page headers every 32 bytes (none followed by a page): each candidate re-read a
    megabyte window, 10 s for 8 MB. The search now stays in the window it has, so the bytes read stay a small
    multiple of the file's."""
    import struct

    fake = b"".join(b"OggS\x00\x00" + bytes(16) + struct.pack("<I", i) + b"\x01\x05" + bytes(4)
                    for i in range(20_000))
    data = _pages(_long_link())[0] + fake

    class Counted(io.BytesIO):
        bytes_read = 0

        def read(self, size: int | None = -1) -> bytes:
            chunk = super().read(size)
            Counted.bytes_read += len(chunk)
            return chunk

    ogg_layout(Counted(data))
    assert Counted.bytes_read <= 4 * len(data) + (2 << 20)


def test_the_server_counts_every_links_declared_length() -> None:
    """``soundfile.info`` reads the first link's header only, so a chain of a short link and a long one (Ogg, or
    FLAC files joined) passed the server's check before decoding and was decoded whole before its length was
    refused."""
    from parakeet_runtime.engine.requests.audio import joined_seconds
    from parakeet_runtime.engine.serving import server

    for fmt, subtype in (("OGG", "VORBIS"), ("FLAC", "PCM_16")):
        short = _encoded(_noise(1.0, RATE, 1), RATE, fmt, subtype)
        long = _encoded(_noise(12.0, RATE, 2), RATE, fmt, subtype)
        assert joined_seconds(short + long) == pytest.approx(13.0, abs=0.01)
        assert joined_seconds(long) is None
        server._check_declared_duration(short, 10.0, None)
        with pytest.raises(server._ApiError, match=r"13\.0 s is longer than this server accepts"):
            server._check_declared_duration(short + long, 10.0, None)
    assert joined_seconds(b"RIFF" + bytes(40)) is None


def test_a_byte_range_reads_like_the_bytes_it_covers() -> None:
    data = bytes(range(256)) * 4
    view = ByteRange(io.BytesIO(data), 100, 900)
    assert view.read(10) == data[100:110]
    assert view.seek(-5, io.SEEK_END) == 795 and view.read() == data[895:900]
    assert view.seek(3) == 3 and view.tell() == 3 and view.read(2) == data[103:105]
    assert view.read(0) == b"" and view.seek(1000) == 1000 and view.read(4) == b""


# --- FLAC cut short, or damaged -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def flac() -> tuple[bytes, np.ndarray]:
    """30 s of noise as FLAC (frames of 4096 samples), and its samples as the engine reads them."""
    data = _encoded(_noise(30.0, RATE, 7), RATE, "FLAC", "PCM_16")
    return data, load_audio(data, RATE).samples


@pytest.mark.parametrize("keep", [0.5, 0.9, -1], ids=["half", "most", "all-but-one-byte"])
@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_a_flac_cut_short_gives_the_audio_before_the_cut(flac: tuple[bytes, np.ndarray], tmp_path: Path,
                                                         caplog: pytest.LogCaptureFixture, keep: float,
                                                         as_path: bool) -> None:
    """A recorder that died, a partial download: the frames before the cut decode, and are the recording. It was
    refused entirely ("flac decoder lost sync", as NeMo does); now it gives them, with a warning."""
    data, whole = flac
    cut = data[:-1] if keep == -1 else data[: int(len(data) * keep)]
    source: Path | bytes = cut
    if as_path:
        source = tmp_path / "cut.flac"
        source.write_bytes(cut)
    with caplog.at_level(logging.WARNING, logger=AUDIO_LOGGER):
        got = load_audio(source, RATE).samples
    assert got.shape[0] % 4096 == 0  # whole frames, up to the one the cut went through
    assert 0 < whole.shape[0] * (len(cut) / len(data)) - got.shape[0] <= 2 * 4096
    np.testing.assert_array_equal(got, whole[: got.shape[0]])
    (warning,) = _warnings(caplog)
    assert "FLAC file is cut short" in warning and f"{got.shape[0] / RATE:.2f} s" in warning


def test_a_flac_whose_tail_is_zeros_is_cut_short(flac: tuple[bytes, np.ndarray]) -> None:
    """A recorder that preallocated its file and died: the audio, then zeros to the end (no frame follows)."""
    data, whole = flac
    half = len(data) // 2
    got = load_audio(data[:half] + bytes(len(data) - half), RATE).samples
    assert 0 < got.shape[0] < whole.shape[0] // 2
    np.testing.assert_array_equal(got, whole[: got.shape[0]])


@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_flac_files_joined_one_after_another_are_all_decoded(flac: tuple[bytes, np.ndarray], tmp_path: Path,
                                                             as_path: bool) -> None:
    """``cat a.flac b.flac``: libsndfile stops at the first stream's declared length, and the second file was lost
    without a word. Every joined stream is now decoded in order, each at its own rate, as chained Ogg links are;
    a cut one among them keeps its warning."""
    data, whole = flac
    other = _encoded(_noise(3.0, 44100, 5), 44100, "FLAC", "PCM_24")
    joined = data + other + data
    source: Path | bytes = joined
    if as_path:
        source = tmp_path / "joined.flac"
        source.write_bytes(joined)
    got = load_audio(source, RATE)
    second = load_audio(other, RATE).samples
    assert got.samples.shape[0] == 2 * whole.shape[0] + second.shape[0] and got.warnings == ()
    np.testing.assert_array_equal(got.samples[: whole.shape[0]], whole)
    np.testing.assert_allclose(got.samples[whole.shape[0] : whole.shape[0] + second.shape[0]], second, atol=1e-6)
    np.testing.assert_array_equal(got.samples[-whole.shape[0]:], whole)
    cut = load_audio(data + other[: len(other) // 2], RATE)
    assert whole.shape[0] < cut.samples.shape[0] < whole.shape[0] + second.shape[0]
    assert len(cut.warnings) == 1 and "FLAC stream 2 of 2" in cut.warnings[0] and "cut short" in cut.warnings[0]


@pytest.mark.parametrize("tail", ["random", "another-file"])
def test_a_flac_followed_by_what_is_not_its_frames_is_refused(flac: tuple[bytes, np.ndarray], tail: str) -> None:
    """Half a FLAC, then megabytes that hold no FLAC frame (garbled to the end, or another file appended): no frame
    follows, so it passed for a file cut short and gave the first half with only a logged warning. More bytes
    follow the last frame than a frame of the stream can hold: damage, refused (zeros at the end stay a cut:
    above)."""
    data, _ = flac
    half = len(data) // 2
    rest = (np.random.default_rng(3).integers(0, 256, 3 << 20, dtype=np.uint8).tobytes() if tail == "random"
            else _encoded(_noise(20.0, RATE, 9), RATE, "OGG", "VORBIS"))
    with pytest.raises(AudioDecodeError, match=r"bytes that are not FLAC frames follow the last frame .* damaged"):
        load_audio(data[:half] + rest, RATE)


def test_a_search_through_crafted_sync_codes_gives_up_and_refuses(flac: tuple[bytes, np.ndarray]) -> None:
    """Half a FLAC, then a megabyte of sync codes that begin no valid frame header: the backward search for the last
    frame examines at most ``flac.MAX_CANDIDATES`` of them (a crafted upload cost seconds per megabyte), then
    calls the file damaged. The length search that runs on every FLAC gives up the same way, silently."""
    from parakeet_runtime.engine.requests import flac as flac_module

    data, _ = flac
    junk = (b"\xff\xf8" + bytes(6)) * (flac_module.MAX_CANDIDATES + 10)
    with pytest.raises(AudioDecodeError, match=r"sync codes that begin no valid frame header follow: .*damaged"):
        load_audio(data[: len(data) // 2] + junk, RATE)
    info = flac_info(io.BytesIO(data))
    assert info is not None
    assert frames_total(io.BytesIO(data + junk[: flac_module.SCAN_WINDOW - 8]), info) is None


@pytest.mark.parametrize("damage", ["zeros", "random", "one-byte", "near-the-end"])
def test_a_flac_damaged_where_audio_follows_is_refused(flac: tuple[bytes, np.ndarray], damage: str) -> None:
    """Bytes garbled in the middle, valid frames after: keeping what came before would drop the rest silently, so
    it is refused, with a typed error that says where and that audio follows. Also when the damage is in the
    last few kilobytes, within what the decoder reads ahead."""
    data, _ = flac
    damaged = bytearray(data)
    middle = len(data) // 2
    if damage == "zeros":
        damaged[middle : middle + 2000] = bytes(2000)
    elif damage == "random":
        damaged[middle : middle + 2000] = np.random.default_rng(1).integers(0, 256, 2000, dtype=np.uint8).tobytes()
    elif damage == "one-byte":
        damaged[middle] ^= 0x55
    else:
        damaged[len(data) - 3000 : len(data) - 2500] = bytes(500)  # the last frame (about 2 KB) stays whole
    with pytest.raises(AudioDecodeError, match=r"after \d+\.\d\d s of audio, and audio follows .*damaged there"):
        load_audio(bytes(damaged), RATE)


def test_a_flac_cut_within_its_first_frame_is_refused(flac: tuple[bytes, np.ndarray]) -> None:
    data, _ = flac
    info = flac_info(io.BytesIO(data))
    assert info is not None
    with pytest.raises(AudioDecodeError, match="cut short within its first frame"):
        load_audio(data[: info.audio_start + 100], RATE)


def test_the_last_frame_is_found_from_the_end(flac: tuple[bytes, np.ndarray]) -> None:
    """The frame search reads STREAMINFO (past an ID3v2 tag too) and finds the last frame's first sample."""
    data, whole = flac
    last = (whole.shape[0] - 1) // 4096 * 4096
    info = flac_info(io.BytesIO(data))
    assert info is not None and (info.max_block, info.sample_rate, info.channels) == (4096, RATE, 1)
    assert last_frame_sample(io.BytesIO(data), info) == last
    tag = b"ID3\x04\x00\x00" + bytes([0, 0, 1, 0]) + bytes(128)  # a 128-byte ID3v2 tag before the stream
    tagged = flac_info(io.BytesIO(tag + data))
    assert tagged is not None and tagged.audio_start == info.audio_start + len(tag)
    assert last_frame_sample(io.BytesIO(tag + data), tagged) == last
    assert flac_info(io.BytesIO(b"RIFF" + bytes(40))) is None


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("rate", [8000, 44100])
def test_every_frame_header_is_recognised_at_its_sample(rate: int, channels: int, subtype: str) -> None:
    """Every frame of libsndfile's FLAC (any rate, channel count, 16 or 24 bits) is recognised at its first sample,
    and nothing in the frames' data is taken for a header."""
    data = _encoded(_noise(3.0, rate, 5, channels), rate, "FLAC", subtype)
    info = flac_info(io.BytesIO(data))
    assert info is not None
    found = [sample for at in range(info.audio_start, len(data) - 1)
             if data[at] == 0xFF and (sample := frame_sample(data, at, info)) is not None]
    assert found == list(range(0, 3 * rate, info.max_block))


# --- longer than the header declares --------------------------------------------------------------------------


def _declaring(data: bytes, total: int) -> bytes:
    """A FLAC written by libsndfile (STREAMINFO right after the magic) whose STREAMINFO declares ``total`` samples."""
    packed = int.from_bytes(data[18:26], "big")
    return data[:18] + ((packed & ~((1 << 36) - 1)) | total).to_bytes(8, "big") + data[26:]


@pytest.mark.parametrize("tagged", [False, True], ids=["plain", "id3v2-tag-first"])
@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
def test_a_flac_whose_header_understates_its_length_is_decoded_whole(flac: tuple[bytes, np.ndarray], tmp_path: Path,
                                                                    as_path: bool, tagged: bool) -> None:
    """A STREAMINFO that declares fewer samples than the frames hold (a buggy encoder or editor, a hostile file):
    libsndfile stops at the declared length without a word, so the rest of the recording was lost. Every frame is
    now decoded, with a warning that says what the header declared."""
    data, whole = flac
    short = _declaring(data, whole.shape[0] // 3)
    if tagged:
        short = b"ID3\x04\x00\x00" + bytes([0, 0, 1, 0]) + bytes(128) + short
    source: Path | bytes = short
    if as_path:
        source = tmp_path / "understated.flac"
        source.write_bytes(short)
    got = load_audio(source, RATE)
    np.testing.assert_array_equal(got.samples, whole)
    (warning,) = got.warnings
    assert f"declares {whole.shape[0] // 3 / RATE:.2f} s" in warning
    assert f"run to {whole.shape[0] / RATE:.2f} s" in warning
    assert load_audio(data, RATE).warnings == ()  # an honest header: nothing to say


@pytest.mark.parametrize(("seconds", "rate", "channels"), [(3.0, 16000, 1), (1.0 + 1 / 16000, 16000, 2),
                                                           (0.01, 8000, 1), (2.5, 44100, 2)])
def test_the_frames_total_is_the_last_frames_start_and_size(seconds: float, rate: int, channels: int) -> None:
    """What the frames hold, read from the last frame's header (its first sample and block size, whatever its size
    code): exactly the samples written, for lengths that are whole frames and lengths that are not."""
    samples = _noise(seconds, rate, 4, channels)
    data = _encoded(samples, rate, "FLAC", "PCM_16")
    info = flac_info(io.BytesIO(_declaring(data, 1)))
    assert info is not None and info.total_samples == 1
    assert frames_total(io.BytesIO(data), info) == samples.shape[0]


def test_joined_flac_streams_each_get_their_whole_length(flac: tuple[bytes, np.ndarray]) -> None:
    """``cat`` of a FLAC whose header understates its length and another: both decoded whole, the warning naming
    the stream."""
    data, whole = flac
    other = _encoded(_noise(2.0, RATE, 6), RATE, "FLAC", "PCM_16")
    got = load_audio(_declaring(data, 4096) + other, RATE)
    second = load_audio(other, RATE).samples
    np.testing.assert_array_equal(got.samples, np.concatenate([whole, second]))
    (warning,) = got.warnings
    assert "FLAC stream 1 of 2" in warning and "understates" in warning


def test_the_servers_length_check_counts_what_understated_frames_hold(flac: tuple[bytes, np.ndarray]) -> None:
    """The check before decoding (``joined_seconds``, beside ``soundfile.info``, which believes the header) counts a
    FLAC stream whose header understates its length as its frames: alone, and joined to another."""
    data, whole = flac
    short = _declaring(data, RATE)
    assert soundfile.info(io.BytesIO(short)).duration == pytest.approx(1.0)
    assert audio_module.joined_seconds(short) == pytest.approx(whole.shape[0] / RATE)
    assert audio_module.joined_seconds(data + short) == pytest.approx(2 * whole.shape[0] / RATE)
    assert audio_module.joined_seconds(data) is None  # an honest header: soundfile's length is right


def test_an_understated_length_still_counts_against_max_seconds(flac: tuple[bytes, np.ndarray]) -> None:
    """A header that declares 1 s of a 30 s file passes a length check made on the header; the decoded length is
    counted as it grows, so the limit still holds."""
    data, _ = flac
    with pytest.raises(AudioTooLongError):
        load_audio(_declaring(data, RATE), RATE, max_seconds=10.0)


# --- shorter than the header declares -------------------------------------------------------------------------


def test_a_file_holding_less_than_its_header_declares_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """A FLAC whose STREAMINFO claims 50 days is read as what it holds (as before), now with a warning; an honest
    one gives none."""
    data = _encoded(_noise(2.0, RATE, 2), RATE, "FLAC", "PCM_16")
    lying = bytearray(data)
    lying[21] = (lying[21] & 0xF0) | 0x0F
    lying[22:26] = b"\xff\xff\xff\xff"
    with caplog.at_level(logging.WARNING, logger=AUDIO_LOGGER):
        np.testing.assert_array_equal(load_audio(bytes(lying), RATE).samples, load_audio(data, RATE).samples)
    (warning,) = _warnings(caplog)
    assert "holds 2.00 s of audio where its header declares" in warning


@pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="this libsndfile has no MP3")
def test_an_mp3_cut_short_says_so(caplog: pytest.LogCaptureFixture) -> None:
    data = _encoded(_noise(20.0, RATE, 4), RATE, "MP3", "MPEG_LAYER_III")
    with caplog.at_level(logging.WARNING, logger=AUDIO_LOGGER):
        assert load_audio(data, RATE).duration == pytest.approx(20.0, abs=0.1)
        assert _warnings(caplog) == []
        assert 9 < load_audio(data[: len(data) // 2], RATE).duration < 11
    (warning,) = _warnings(caplog)
    assert "header declares 20.00 s" in warning


# --- MP3 files joined -----------------------------------------------------------------------------------------

NO_MP3 = pytest.mark.skipif("MP3" not in soundfile.available_formats(), reason="this libsndfile has no MP3")
ID3V2 = b"ID3\x03\x00\x00\x00\x00\x01\x00" + bytes(128)
"""An ID3v2.3 tag of 128 bytes of padding, as taggers put before MP3 audio."""


def _mp3s() -> list[bytes]:
    return [_encoded(_noise(2.0, RATE, 11), RATE, "MP3", "MPEG_LAYER_III"),
            _encoded(_noise(1.3, 44100, 12, channels=2), 44100, "MP3", "MPEG_LAYER_III"),
            _encoded(_noise(0.9, 8000, 13), 8000, "MP3", "MPEG_LAYER_III")]


def _xing(data: bytes, *, flags: int | None = None, size: int | None = None) -> bytes:
    """``data`` (libsndfile's MP3: a Xing frame first, MPEG-2 mono or MPEG-1 stereo) with its Xing flags or byte count
    replaced."""
    at = data.index(b"Xing")
    patched = bytearray(data)
    if flags is not None:
        patched[at + 4 : at + 8] = flags.to_bytes(4, "big")
    if size is not None:
        patched[at + 12 : at + 16] = size.to_bytes(4, "big")
    return bytes(patched)


def _joined_parts(kind: str) -> list[bytes]:
    wavs = [_encoded(_noise(1.5, RATE, 1), RATE, "WAV", "PCM_16"),
            _encoded(_noise(0.7, 44100, 2, channels=2), 44100, "WAV", "PCM_24"),
            _encoded(_noise(1.0, 8000, 3), 8000, "WAV", "FLOAT")]
    if kind == "wav":
        return wavs
    if kind == "wav-streamed-sizes":  # data sizes of 0, as a writer to a pipe leaves them
        return [wav_declaring(wav, 0) for wav in wavs]
    if kind == "wav-tags-and-odd-sizes":  # an ID3v1 tag after the first; the second's odd size without its pad byte
        odd = _encoded(_noise(0.5, RATE, 4), RATE, "WAV", "PCM_U8")[:-1]
        odd = wav_declaring(odd, len(odd) - odd.index(b"data") - 8)
        return [wavs[0] + b"TAG" + bytes(125), odd, wavs[2]]
    tails = {"mp3-id3v1-tags": b"TAG" + bytes(125), "mp3-ape-tags": b"APETAGEX" + (2000).to_bytes(4, "little")
             + (0).to_bytes(4, "little") + bytes(16)}
    return [(ID3V2 if kind == "mp3-id3v2-tags" else b"") + part + tails.get(kind, b"") for part in _mp3s()]


@pytest.mark.parametrize("as_path", [False, True], ids=["bytes", "path"])
@pytest.mark.parametrize("kind", ["wav", "wav-streamed-sizes", "wav-tags-and-odd-sizes",
                                  *(pytest.param(kind, marks=NO_MP3) for kind in
                                    ("mp3", "mp3-id3v2-tags", "mp3-id3v1-tags", "mp3-ape-tags"))])
def test_wav_and_mp3_files_joined_one_after_another_are_each_decoded(tmp_path: Path, as_path: bool,
                                                                     kind: str) -> None:
    """``cat a.wav b.wav c.wav`` (libsndfile refused the whole file: "No 'RIFF' chunk marker") and ``cat a.mp3 b.mp3
    c.mp3`` (libsndfile believed the first file's Xing frame count and stopped there, and the rest was lost without
    an error): each file is decoded on its own, in order (the same samples as each alone: its own rate, channels,
    sample format and, for MP3, gapless trimming); the server's length check adds them up."""
    parts = _joined_parts(kind)
    joined = b"".join(parts)
    source: Path | bytes = joined
    if as_path:
        source = tmp_path / f"joined.{kind[:3]}"
        source.write_bytes(joined)
    got = load_audio(source, RATE)
    alone = [load_audio(part, RATE).samples for part in parts]
    np.testing.assert_array_equal(got.samples, np.concatenate(alone))
    assert got.warnings == ()
    seconds = sum(a.shape[0] for a in alone) / RATE
    assert audio_module.joined_seconds(joined) == pytest.approx(seconds, abs=0.1)
    with pytest.raises(AudioTooLongError):
        load_audio(joined, RATE, max_seconds=seconds - 0.5)


@NO_MP3
@pytest.mark.parametrize("xing", ["no-byte-count", "wrong-byte-count", "one-byte-short", "counts-a-tag-it-lacks"])
def test_where_an_mp3_ends_is_counted_in_frames_without_a_byte_count(xing: str) -> None:
    """A Xing frame without a byte count, or with one that points at a frame in the middle of the file: the end of
    the first file is found by walking its declared number of frames (a count that points at no frame, or at the
    end, is taken at its word: a file alone)."""
    first, second, _ = _mp3s()
    if xing == "no-byte-count":
        first = _xing(first, flags=0x1)
    elif xing == "one-byte-short":
        first = _xing(first, size=len(first) - 1)
    elif xing == "counts-a-tag-it-lacks":
        first = _xing(first, size=len(first) + 128)
    else:
        middle = 0
        for _ in range(10):  # the 10th frame's offset
            frame = frame_at(first, middle)
            assert frame is not None
            middle += frame.length
        first = _xing(first, size=middle)
    got = load_audio(first + second, RATE)
    np.testing.assert_array_equal(got.samples, np.concatenate([load_audio(first, RATE).samples,
                                                               load_audio(second, RATE).samples]))


@NO_MP3
def test_the_frame_walk_has_a_bound(monkeypatch: pytest.MonkeyPatch) -> None:
    """A first file that declares more frames than ``mpeg.MAX_WALK_FRAMES`` is not walked (a crafted upload of tiny
    frames made the walk cost seconds, twice per request): it is taken as the only file, libsndfile's reading."""
    from parakeet_runtime.engine.requests import mpeg

    first, second, _ = _mp3s()
    first = _xing(first, flags=0x1)  # no byte count: the end can only be found by walking
    assert mpeg.appended_mp3s(io.BytesIO(first + second), 10) == [len(first)]
    monkeypatch.setattr(mpeg, "MAX_WALK_FRAMES", 5)
    assert mpeg.appended_mp3s(io.BytesIO(first + second), 10) == []


@NO_MP3
def test_what_follows_an_mp3_that_is_not_another_is_left_as_it_was() -> None:
    """An ID3v1, ID3v2 or APE tag, or a few stray bytes, after the frames: one file, decoded as before, nothing
    said; and an MP3 cut anywhere in its first frame is a typed error."""
    first = _mp3s()[0]
    expected = load_audio(first, RATE).samples
    for tail in (b"TAG" + bytes(125), bytes(7), b"APETAGEX" + bytes(24), ID3V2):
        got = load_audio(first + tail, RATE)
        np.testing.assert_array_equal(got.samples, expected)
        assert got.warnings == ()
    assert audio_module.joined_seconds(first) is None
    for cut in range(4, 40):
        with pytest.raises(AudioDecodeError):
            load_audio(first[:cut], RATE)


def test_thousands_of_tiny_joined_files_are_refused_at_once() -> None:
    """Files joined with ``cat`` can be a few dozen bytes each: past :data:`audio.MAX_FILES` the upload is refused
    before anything is decoded (each costs a decoder set-up)."""
    tiny = _encoded(np.zeros(2, dtype=np.float32), RATE, "WAV", "PCM_16")
    with pytest.raises(AudioDecodeError, match=r"WAV files one after another; at most \d+ are decoded"):
        load_audio(tiny * (audio_module.MAX_FILES + 1), RATE)


def test_joined_streams_that_each_warn_are_counted_past_a_few_warnings() -> None:
    """Joined WAVs whose headers each understate their audio: each is read whole, the first few named in warnings
    and the rest counted in one."""
    wav = _encoded(_noise(0.2, RATE, 2), RATE, "WAV", "PCM_16")
    data = wav.index(b"data")
    short = wav[: data + 4] + (1000).to_bytes(4, "little") + wav[data + 8 :]
    got = load_audio(short * 15, RATE)
    np.testing.assert_array_equal(got.samples, np.tile(load_audio(wav, RATE).samples, 15))
    assert len(got.warnings) == audio_module.MAX_SKIP_WARNINGS + 1
    assert "5 more of its streams declare less audio" in got.warnings[-1]


def test_streams_that_cannot_be_decoded_are_counted_past_a_few_warnings() -> None:
    """Many joined streams that libsndfile cannot open (RIFF headers with no audio): the first few are named, the
    rest counted in one warning, so a crafted upload cannot fill the transcript with warnings."""
    good = _encoded(_noise(0.5, RATE, 1), RATE, "WAV", "PCM_16")
    broken = b"RIFF" + (12).to_bytes(4, "little") + b"WAVE" + b"JUNK" + (0).to_bytes(4, "little")
    got = load_audio(good + broken * 40, RATE)
    np.testing.assert_array_equal(got.samples, load_audio(good, RATE).samples)
    assert len(got.warnings) == audio_module.MAX_SKIP_WARNINGS + 1
    assert "30 more of its 41 streams could not be decoded" in got.warnings[-1]


# --- every entry point ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load(batching=BatchingOptions(enabled=False)) as loaded:
        yield loaded


@pytest.fixture(scope="module")
def clip(sample_samples: np.ndarray) -> np.ndarray:
    return sample_samples


@pytest.fixture(scope="module")
def sentence(engine: Engine) -> str:
    return engine.transcribe(sample_audio_path()).text


def _chain(clip: np.ndarray, copies: int) -> bytes:
    """The sample clip as ``copies`` chained Ogg streams, Vorbis and Opus in turn."""
    return b"".join(_encoded(clip, RATE, "OGG", "OPUS" if i % 2 else "VORBIS") for i in range(copies))


def test_the_engine_transcribes_every_chained_stream(engine: Engine, clip: np.ndarray, sentence: str,
                                                      tmp_path: Path) -> None:
    chained = _chain(clip, 2)
    path = tmp_path / "chained.ogg"
    path.write_bytes(chained)
    for source in (chained, path, str(path)):
        transcript = engine.transcribe(source)
        assert transcript.text == f"{sentence} {sentence}"
        assert transcript.duration == pytest.approx(2 * clip.shape[0] / RATE, abs=0.01)
    assert [t.text for t in engine.transcribe([path, chained])] == [f"{sentence} {sentence}"] * 2


def test_a_long_chain_is_transcribed_in_chunks(clip: np.ndarray, tmp_path: Path) -> None:
    """The chunked path (``transcribe_iter``, inputs beyond one pass) reads through the same reader."""
    path = tmp_path / "radio.ogg"
    path.write_bytes(_chain(clip, 5))
    options = LongFormOptions(chunk_seconds=10, left_context_seconds=4, right_context_seconds=2, memory_budget=1)
    with Engine.load(long_form=options) as chunked:
        *_, final = chunked.transcribe_iter(path)
        assert final.transcript is not None and final.transcript.strategy == "chunked"
        assert final.duration == pytest.approx(5 * clip.shape[0] / RATE, abs=0.01)
        assert final.transcript.text == chunked.transcribe(load_audio(path, RATE).samples).text


def test_the_cli_transcribes_every_chained_stream(clip: np.ndarray, sentence: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from parakeet_runtime.engine.serving.cli import main

    path = tmp_path / "chained.ogg"
    path.write_bytes(_chain(clip, 2))
    assert main(["transcribe", str(path), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["text"] == f"{sentence} {sentence}"


def test_the_server_transcribes_chains_and_cut_flacs(engine: Engine, clip: np.ndarray, sentence: str) -> None:
    from parakeet_runtime.engine.serving.server import create_app

    app = create_app(engine)
    twice = np.concatenate([clip, np.zeros(RATE // 2, dtype=np.float32), clip])
    flac = _encoded(twice, RATE, "FLAC", "PCM_16")
    cut = flac[: int(len(flac) * 0.8)]  # the first clip whole, the second cut off

    async def post(data: bytes, name: str) -> Any:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.post("/v1/audio/transcriptions", files={"file": (name, data)},
                                         data={"model": "p"}, timeout=60)
            assert response.status_code == 200, response.text
            return response.json()

    assert asyncio.run(post(_chain(clip, 2), "a.ogg"))["text"] == f"{sentence} {sentence}"
    assert asyncio.run(post(cut, "a.flac"))["text"] == engine.transcribe(load_audio(cut, RATE).samples).text
    assert clip.shape[0] / RATE + 0.5 < load_audio(cut, RATE).duration < twice.shape[0] / RATE
    wav = _encoded(clip, RATE, "WAV", "PCM_16")
    assert asyncio.run(post(wav + wav, "joined.wav"))["text"] == f"{sentence} {sentence}"
    one = _encoded(clip, RATE, "FLAC", "PCM_16")
    answer = asyncio.run(post(_declaring(one, RATE // 2), "short-header.flac"))  # STREAMINFO declares half a second
    assert answer["text"] == sentence and "understates" in answer["warnings"][0]


def test_the_server_holds_a_whole_chain_to_its_limit(engine: Engine, clip: np.ndarray) -> None:
    """The server's check before decoding reads the header, which declares the first link's length only; the
    decoded length of the whole chain is what it holds to its limit."""
    from parakeet_runtime.engine.serving.options import ServerOptions
    from parakeet_runtime.engine.serving.server import create_app

    app = create_app(engine, ServerOptions(max_audio_s=6))

    async def post(data: bytes) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.post("/v1/audio/transcriptions", files={"file": ("a.ogg", data)},
                                     data={"model": "p"}, timeout=60)

    assert asyncio.run(post(_chain(clip, 1))).status_code == 200
    refused = asyncio.run(post(_chain(clip, 2)))
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "audio_too_long"


def test_a_cut_flac_through_the_engine_warns_and_transcribes(engine: Engine, clip: np.ndarray, sentence: str,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    twice = np.concatenate([clip, np.zeros(RATE // 2, dtype=np.float32), clip])
    flac = _encoded(twice, RATE, "FLAC", "PCM_16")
    with caplog.at_level(logging.WARNING, logger=AUDIO_LOGGER):
        transcript = engine.transcribe(flac[: int(len(flac) * 0.8)])
    assert transcript.text.startswith(sentence)
    assert any("cut short" in message for message in _warnings(caplog))


# --- mutations -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["ogg-chain", "flac"])
def test_mutated_chains_and_flacs_give_audio_or_a_typed_error(flac: tuple[bytes, np.ndarray], kind: str) -> None:
    """Bytes flipped, cut, inserted or deleted anywhere (page headers, segment tables, frame headers, STREAMINFO):
    the page walk and the frame search give audio or an :class:`AudioDecodeError`, never another exception."""
    original = b"".join(_links("opus")) if kind == "ogg-chain" else flac[0][:60_000]
    rng = np.random.default_rng(11)
    outcomes: dict[str, int] = {}
    for _ in range(60):
        data = bytearray(original)
        at = int(rng.integers(0, len(data)))
        action = int(rng.integers(0, 4))
        if action == 0:
            data[at] ^= int(rng.integers(1, 256))
        elif action == 1:
            del data[at:]
        elif action == 2:
            data[at:at] = rng.integers(0, 256, int(rng.integers(1, 64)), dtype=np.uint8).tobytes()
        else:
            del data[at : at + int(rng.integers(1, 64))]
        try:
            load_audio(bytes(data), RATE)
            outcomes["ok"] = outcomes.get("ok", 0) + 1
        except AudioDecodeError:
            outcomes["refused"] = outcomes.get("refused", 0) + 1
    assert sum(outcomes.values()) == 60 and outcomes.get("ok", 0) > 0
