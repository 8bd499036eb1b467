"""What the audio reader accepts imperfect (a FLAC or Ogg file cut short, a file holding less than its header
declares) reaches the caller in ``Transcript.warnings`` on every entry point, not only the log: ``transcribe``
(path, bytes, each input of a list its own), ``transcribe_async``, ``transcribe_iter``, the chunked path, the
runner's own path (Ray Serve's), the CLI's JSON, the server's json and verbose_json, and Ray Data's rows. A clean
input's transcript has none, and its JSON keeps its shape."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import Engine, LongFormOptions, Transcript, load_audio
from parakeet_runtime.engine.requests.prepare import PreparedAudio

RATE = 16000
AUDIO_LOGGER = "parakeet_runtime.engine.requests.audio"
CUT = "FLAC file is cut short"


def _encoded(samples: np.ndarray, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, RATE, format=fmt, subtype=subtype)
    return buffer.getvalue()


def _logged(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == AUDIO_LOGGER and r.levelno >= logging.WARNING]


@pytest.fixture(scope="module")
def clip(sample_samples: np.ndarray) -> np.ndarray:
    return sample_samples


@pytest.fixture(scope="module")
def twice(clip: np.ndarray) -> np.ndarray:
    """The sample sentence, half a second of silence, the sentence again."""
    return np.concatenate([clip, np.zeros(RATE // 2, dtype=np.float32), clip])


@pytest.fixture(scope="module")
def clean(twice: np.ndarray) -> bytes:
    return _encoded(twice, "FLAC", "PCM_16")


@pytest.fixture(scope="module")
def cut(clean: bytes) -> bytes:
    """The FLAC cut off at 80 %: the first sentence whole, the second cut off (a recorder that died)."""
    return clean[: int(len(clean) * 0.8)]


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, clean: bytes, cut: bytes) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("warnings")
    paths = {"clean": folder / "clean.flac", "cut": folder / "cut.flac"}
    paths["clean"].write_bytes(clean)
    paths["cut"].write_bytes(cut)
    return paths


@pytest.fixture(scope="module")
def engine() -> Iterator[Engine]:
    with Engine.load() as loaded:  # the dynamic batcher on: requests of both kinds share batches
        yield loaded


def _one_cut_warning(transcript: Transcript) -> str:
    (warning,) = transcript.warnings
    assert CUT in warning and "transcribing the" in warning and "before the cut" in warning
    return warning


# --- the reader ------------------------------------------------------------------------------------------------


def test_the_reader_keeps_what_it_logs(cut: bytes, clean: bytes, twice: np.ndarray,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """Each warning the reader logs is also in ``Audio.warnings``, word for word; a clean file and an array have
    none."""
    ogg = _encoded(twice, "OGG", "VORBIS")
    lying = bytearray(clean)  # STREAMINFO claiming about 50 days
    lying[21] = (lying[21] & 0xF0) | 0x0F
    lying[22:26] = b"\xff\xff\xff\xff"
    for data, expected in ((cut, CUT), (ogg[: len(ogg) // 2], "Ogg data is cut short"),
                           (bytes(lying), "where its header declares")):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger=AUDIO_LOGGER):
            audio = load_audio(data, RATE)
        (warning,) = audio.warnings
        assert expected in warning
        assert _logged(caplog) == [warning]
    assert load_audio(clean, RATE).warnings == ()
    assert load_audio(ogg, RATE).warnings == ()
    assert load_audio(twice, RATE).warnings == ()


# --- the engine ------------------------------------------------------------------------------------------------


def test_transcribe_a_cut_flac_says_so(engine: Engine, files: dict[str, Path], cut: bytes, clean: bytes,
                                       caplog: pytest.LogCaptureFixture) -> None:
    """A path, a string and bytes of a cut FLAC: one warning, naming the cut; the transcript is otherwise that of
    the audio before the cut. A clean file: none (and the warning is still logged, as before)."""
    before_cut = load_audio(cut, RATE)
    expected = engine.transcribe(before_cut.samples)
    assert expected.warnings == ()
    with caplog.at_level(logging.WARNING, logger=AUDIO_LOGGER):
        for source in (files["cut"], str(files["cut"]), cut):
            transcript = engine.transcribe(source)
            warning = _one_cut_warning(transcript)
            assert warning in _logged(caplog)
            assert dataclasses.replace(transcript, warnings=()) == expected
    assert str(files["cut"]) in engine.transcribe(files["cut"]).warnings[0]  # says which input
    for source in (files["clean"], clean):
        assert engine.transcribe(source).warnings == ()


def test_each_input_of_a_list_has_its_own(engine: Engine, files: dict[str, Path], cut: bytes,
                                          clean: bytes, clip: np.ndarray) -> None:
    results = engine.transcribe([files["cut"], clean, cut, clip, files["clean"]])
    assert [len(t.warnings) for t in results] == [1, 0, 1, 0, 0]
    assert str(files["cut"]) in _one_cut_warning(results[0])
    assert f"{len(cut)} bytes of encoded audio" in _one_cut_warning(results[2])


def test_concurrent_requests_do_not_share_warnings(engine: Engine, files: dict[str, Path]) -> None:
    """Cut and clean requests from several threads at once, batched together by the runner: each transcript
    carries its own input's warnings, never another request's."""
    sources = [files["cut"], files["clean"]] * 4
    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        results = list(pool.map(engine.transcribe, sources))
    assert [len(t.warnings) for t in results] == [1, 0] * 4


def test_transcribe_async_says_so(engine: Engine, files: dict[str, Path], cut: bytes, clean: bytes) -> None:
    async def go() -> tuple[Transcript, Transcript, list[Transcript]]:
        return (await engine.transcribe_async(cut), await engine.transcribe_async(files["clean"]),
                await engine.transcribe_async([clean, files["cut"]]))

    one, other, listed = asyncio.run(go())
    _one_cut_warning(one)
    assert other.warnings == ()
    assert listed[0].warnings == ()
    _one_cut_warning(listed[1])


def test_transcribe_iter_says_so_on_the_last_update(engine: Engine, files: dict[str, Path]) -> None:
    *_, final = engine.transcribe_iter(files["cut"])
    assert final.transcript is not None
    _one_cut_warning(final.transcript)
    assert final.warnings == final.transcript.warnings
    *_, final = engine.transcribe_iter(files["clean"])
    assert final.transcript is not None and final.transcript.warnings == ()


def test_the_chunked_path_keeps_the_warning(files: dict[str, Path], cut: bytes, clean: bytes) -> None:
    """An input transcribed in chunks (forced here; a long recording is the real case): ``transcribe`` (single and
    list), ``transcribe_async`` and ``transcribe_iter``'s last update all carry it."""
    options = LongFormOptions(strategy="chunked", chunk_seconds=1, left_context_seconds=1, right_context_seconds=1)
    with Engine.load(long_form=options) as chunked:
        transcript = chunked.transcribe(files["cut"])
        assert transcript.strategy == "chunked"
        _one_cut_warning(transcript)
        assert chunked.transcribe(files["clean"]).warnings == ()
        updates = list(chunked.transcribe_iter(cut))
        assert len(updates) > 1  # several chunk groups: the whole transcript comes at the end
        final = updates[-1].transcript
        assert final is not None and final.strategy == "chunked"
        _one_cut_warning(final)
        # every update says so, the first included: a caller stopping early still learns it
        assert all(update.warnings == final.warnings for update in updates)
        assert all(update.warnings == () for update in chunked.transcribe_iter(clean))
        assert [len(t.warnings) for t in chunked.transcribe([clean, cut])] == [0, 1]
        _one_cut_warning(asyncio.run(chunked.transcribe_async(cut)))


def test_the_runners_own_path_keeps_the_warning(engine: Engine, cut: bytes, clean: bytes) -> None:
    """What Ray Serve's replicas run: prepared requests straight through ``Inference.run``."""
    prepared = [engine.prepare(cut), engine.prepare(clean)]
    assert all(isinstance(p, PreparedAudio) for p in prepared)
    outcomes = engine.inference.run([p for p in prepared if isinstance(p, PreparedAudio)])
    assert isinstance(outcomes[0], Transcript) and isinstance(outcomes[1], Transcript)
    _one_cut_warning(outcomes[0])
    assert outcomes[1].warnings == ()


def test_audio_too_short_to_encode_keeps_the_warning(engine: Engine, clip: np.ndarray) -> None:
    """A file whose header declares seconds and which holds a few samples: nothing to encode, an empty transcript,
    and still the warning that the file held less than it declared."""
    tiny = _encoded(clip[:100], "FLAC", "PCM_16")
    lying = bytearray(tiny)
    lying[21] = (lying[21] & 0xF0) | 0x0F
    lying[22:26] = b"\xff\xff\xff\xff"
    transcript = engine.transcribe(bytes(lying))
    assert transcript.text == ""
    (warning,) = transcript.warnings
    assert "where its header declares" in warning


# --- results and outputs ---------------------------------------------------------------------------------------


def test_to_dict_has_warnings_only_when_there_are_some() -> None:
    plain = Transcript(text="a", duration=1.0)
    assert plain.warnings == () and "warnings" not in plain.to_dict()
    warned = dataclasses.replace(plain, warnings=("x: cut short",))
    assert warned.to_dict()["warnings"] == ["x: cut short"]
    assert {k: v for k, v in warned.to_dict().items() if k != "warnings"} == plain.to_dict()
    json.dumps(warned.to_dict())


def test_the_cli_json_says_so(files: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from parakeet_runtime.engine.serving.cli import main

    assert main(["transcribe", str(files["cut"]), "--format", "json"]) == 0
    body = json.loads(capsys.readouterr().out)
    (warning,) = body["warnings"]
    assert CUT in warning
    assert main(["transcribe", str(files["clean"]), "--format", "json"]) == 0
    assert "warnings" not in json.loads(capsys.readouterr().out)
    assert main(["transcribe", str(files["cut"]), str(files["clean"]), "--format", "jsonl"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [len(line.get("warnings", [])) for line in lines] == [1, 0]
    assert main(["transcribe", str(files["cut"]), "--format", "text"]) == 0
    text = capsys.readouterr().out
    assert CUT not in text and text == body["text"] + "\n"  # text output unchanged (the warning is on stderr's log)


def test_the_server_says_so_in_json_and_verbose_json(engine: Engine, cut: bytes, clean: bytes) -> None:
    from parakeet_runtime.engine.serving.server import create_app

    app = create_app(engine)

    async def post(data: bytes, response_format: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            response = await client.post("/v1/audio/transcriptions", files={"file": ("a.flac", data)},
                                         data={"model": "p", "response_format": response_format}, timeout=60)
            assert response.status_code == 200, response.text
            return response

    for fmt in ("json", "verbose_json"):
        body: dict[str, Any] = asyncio.run(post(cut, fmt)).json()
        (warning,) = body["warnings"]
        assert CUT in warning and f"{len(cut)} bytes of encoded audio" in warning
        assert "warnings" not in asyncio.run(post(clean, fmt)).json()
    assert asyncio.run(post(clean, "json")).json() == {"text": engine.transcribe(clean).text}  # OpenAI's shape
    transcript = engine.transcribe(cut)
    assert asyncio.run(post(cut, "text")).text == transcript.text  # text, srt, vtt: unchanged
    assert CUT not in asyncio.run(post(cut, "srt")).text


def test_ray_data_rows_carry_warnings(cut: bytes, clean: bytes) -> None:
    """Ray Data's ``warnings`` column (the callable class in this process, no cluster): the cut file's row has its
    warning, the clean file's and a failed row's none, and ``transcript_from_row`` gives the transcript them."""
    pytest.importorskip("ray")
    import pyarrow as pa

    from parakeet_runtime.engine.ray_data import (
        RESULT_SCHEMA,
        EngineSpec,
        Transcriber,
        result_columns,
        transcript_from_row,
    )

    transcriber = Transcriber(EngineSpec(model=None, threads=1, max_batch_size=4), "audio")
    result = transcriber(pa.table({"audio": [cut, clean]}))
    assert result.schema.field("warnings").type == RESULT_SCHEMA.field("warnings").type
    rows = result.to_pylist()
    (warning,) = rows[0]["warnings"]
    assert CUT in warning
    assert rows[1]["warnings"] == []
    rebuilt = transcript_from_row(rows[0])
    assert rebuilt.warnings == transcriber.engine.transcribe(cut).warnings == (warning,)
    assert transcript_from_row(rows[1]).warnings == ()
    assert result_columns([ValueError("bad")])["warnings"].to_pylist() == [[]]  # a failed row: its error says why
