"""The Engine: load a model directory once, transcribe from any number of threads.

Everything an ``Engine`` holds is read-only after :meth:`Engine.load`: the manifest, the feature
arrays, the tokenizer tables and the ONNX Runtime sessions. Each ``transcribe`` call keeps its own
state (audio, features, predictor state, tokens) in local variables, so calls never interfere.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import functools
import logging
import math
import os
import time
import weakref
from collections.abc import Callable, Generator, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, overload

import numpy as np

from parakeet_runtime.decoding import DecodedToken, StepConfidence, TdtCarry, TdtConfig

from .errors import OptionsError, OptionsTypeError, ParakeetRuntimeError
from .memory import release_free_memory
from .model.devices import Provider, check_sessions, choose_providers
from .model.features import FeatureExtractor
from .model.layouts import load_other_layout, resolve_model_dir
from .model.manifest import Manifest, load_manifest
from .model.onnx_model import OnnxTdtModel
from .model.tokenizer import Tokenizer
from .options import BatchingOptions, ConfidenceOptions, LongFormOptions, SessionOptions
from .requests.abandon import Abandonment
from .requests.audio import AudioInput, check_sample_rate_argument
from .requests.inference import Inference, Outcome, batch_invariant, decoding_batch_invariant
from .requests.longform import ChunkGroup, ChunkOutcome, Window, group_size, groups
from .requests.prepare import LongAudio, Prepared, PreparedAudio, Preparer
from .requests.runner import Runner, make_runner
from .requests.transcripts import TranscriptBuilder, timestamp_config
from .results import Transcript, TranscriptUpdate

logger = logging.getLogger(__name__)

LIST_CHUNKS_IN_FLIGHT = 2
"""A list is submitted in length-sorted chunks of ``max_batch_size``; this many are queued at once, so the
worker always has the next chunk while the caller waits for a result, and a long list never fills the queue."""


def default_model_dir() -> Path:
    """The demo model shipped inside the package (trained on synthetic speech; see README)."""
    return Path(__file__).resolve().parent / "default_model"


def sample_audio_path() -> Path:
    """The sample clip shipped inside the package."""
    return Path(__file__).resolve().parent / "data" / "sample.wav"


@dataclass(frozen=True, eq=False)
class Engine:
    """A loaded model. Create it with :meth:`Engine.load`; share it freely between threads and tasks.

    The model state (manifest, feature arrays, tokenizer tables, ONNX Runtime sessions) is read-only.
    Every request, single or list, sync or async, takes one path: it is prepared (audio decoded, features
    computed) in the caller's thread, then handed to the runner, which runs the graphs — the dynamic
    batcher's worker, or the caller's thread when batching is off. The runner is the only moving part;
    :meth:`close` (or leaving a ``with`` block) stops it for every entry point.
    """

    model_dir: Path
    manifest: Manifest
    features: FeatureExtractor
    tokenizer: Tokenizer
    model: OnnxTdtModel
    inference: Inference
    """Encodes and decodes prepared requests (what the runner runs)."""
    batching: BatchingOptions
    runner: Runner = field(repr=False)
    """Where requests run: the dynamic batcher, or the caller's thread (``BatchingOptions.enabled=False``)."""
    preparer: Preparer = field(repr=False)
    _shares_with: Engine | None = field(default=None, repr=False)
    """The engine a view (:meth:`with_max_audio_seconds`) shares its runner with, kept alive by it: the runner is
    closed when that engine is collected."""

    @classmethod
    def load(
        cls,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        providers: Sequence[Provider] | None = None,
        device: str | None = None,
        session: SessionOptions | None = None,
        batching: BatchingOptions | None = None,
        verify: bool = False,
        confidence: ConfidenceOptions | None = None,
        precision: str | None = None,
        hub_cache_dir: str | os.PathLike[str] | None = None,
        long_form: LongFormOptions | None = None,
        argmax_step: bool | None = None,
    ) -> Engine:
        """Load a model directory written by ``convert-model``, or one in onnx-asr's or sherpa-onnx's NeMo
        TDT layout (see ``model/onnx_asr.py``, ``model/sherpa_onnx.py``), or a Hugging Face hub name of
        such a directory (``owner/name``, downloaded with ``huggingface_hub``; see ``model/hub.py``).

        Args:
            model_dir: the directory; ``None`` loads the bundled demo model.
            providers: ONNX Runtime execution providers, in order of preference: names, or ``(name,
                options)`` pairs (default: CUDA if this onnxruntime build has it, then CPU). The low-level
                form of ``device``: given as they are, unchecked (ONNX Runtime may fall back to the CPU).
            device: ``"cpu"``, ``"cuda"`` (ONNX Runtime's CUDA execution provider) or ``"tensorrt"`` (its
                TensorRT provider, fp16, the CUDA provider for the rest); picks the providers, so not with
                ``providers``; the graphs must then run on that device's provider (no silent fall-back to the
                CPU). Default ``None``: ``providers`` as given (or their default). See ``model/devices.py``.
            session: ONNX Runtime threading (default: :class:`SessionOptions`).
            batching: dynamic batching (default: :class:`BatchingOptions`, enabled).
            verify: check every file against the SHA-256 the manifest records (reads every byte once;
                sizes, where recorded, are always checked). Only for this project's model directories: the
                other layouts record no digests.
            confidence: give tokens, words and segments NeMo's confidence scores, computed as these
                options say (default ``None``: no confidence, nothing computed).
            precision: for onnx-asr and sherpa-onnx layouts holding fp32 and int8 graphs, which to load:
                ``"fp32"`` or ``"int8"`` (default: fp32 when present, else int8). Ignored for this
                project's own directories (their manifest names their graphs).
            hub_cache_dir: where a hub name is downloaded (default: ``huggingface_hub``'s cache,
                ``HF_HUB_CACHE``); ``HF_HUB_OFFLINE=1`` reads only the cache.
            long_form: how inputs of any length are transcribed (default: :class:`LongFormOptions`: one pass
                while it fits a memory budget derived from this machine, else chunks).
            argmax_step: the decoding step and the joint return the argmax label and duration instead of
                logits, so that a step on a GPU copies two integers per row back, and a step with int8 decoding
                weights never assembles the joint's full-width logits (same tokens, durations and timestamps;
                no confidence). Default ``None``: on when no confidence is asked for, for ``device="cuda"`` or
                ``"tensorrt"``, for int8 decoding weights (``SessionOptions.decoder_weights``) and, on the CPU,
                for fp32 ones with a joint as large as Parakeet v3's (its labels ranked in int8 with a proof:
                the fp32 path's tokens), else off.
                Only for this project's model directories.

        Raises:
            ModelDirectoryError: the directory or one of its files is missing.
            ModelDownloadError: a hub name that cannot be fetched (no network and not cached, no such
                repository, or no ``huggingface_hub``).
            ManifestError: the manifest or a model file is invalid, a file it names lies outside the
                directory, or differs from the size (or, with ``verify``, the hash) the manifest records.
            DeviceUnavailableError: ``device`` needs an execution provider this onnxruntime build lacks, or
                one that could not start (no GPU).
            LayoutOptionError: ``verify``, ``argmax_step=True``, ``backend='openvino'`` or a forced
                ``int8_weights`` with another runtime's layout (refused before its graphs load).
            OptionsError: an unknown ``device`` or ``precision``; ``device`` with ``providers``; ``argmax_step=True``
                with ``confidence`` (a ``ValueError``).
            OptionsTypeError: ``providers`` given as one string instead of a list (an ``OptionsError`` and a
                ``TypeError``).
        """
        if precision not in (None, "fp32", "int8"):
            hint = (" (the OpenVINO encoder's precision is SessionOptions(backend='openvino', precision=...))"
                    if precision in ("bf16", "fp16") else "")
            raise OptionsError("Engine.load", "precision", "'fp32', 'int8' or None", precision,
                               message=f"precision must be 'fp32', 'int8' or None (another layout's graphs to load), "
                               f"got {precision!r:.40}{hint}")
        if isinstance(providers, (str, bytes)):  # a string is a sequence: it became one provider per letter
            raise OptionsTypeError("Engine.load", "providers", "a list of provider names or (name, options) pairs",
                                   providers, message=f"providers must be a list of provider names or (name, "
                                   f"options) pairs, not the string {providers!r:.60}: providers=[{providers!r:.60}]")
        directory = (  # a hub name (owner/name) is downloaded into the hub cache
            resolve_model_dir(model_dir, cache_dir=hub_cache_dir, precision=precision)
            if model_dir is not None else default_model_dir()
        )
        batching = batching or BatchingOptions()
        providers, checked_device = choose_providers(device, providers, directory)
        if argmax_step and confidence is not None:
            raise OptionsError("Engine.load", "argmax_step", "False or None with confidence", argmax_step,
                               message="argmax_step=True gives no logits, so no confidence: leave it off with "
                               "confidence")
        session = session or SessionOptions()
        layout = load_other_layout(  # onnx-asr's or sherpa-onnx's layout (no manifest.json); None for ours
            directory, providers=providers, session=session, precision=precision, verify=verify,
            argmax_step=bool(argmax_step),
        )
        if layout is not None:
            manifest, features, tokenizer, model = layout.manifest, layout.features, layout.tokenizer, layout.model
        else:
            manifest = load_manifest(directory, verify=verify)
            features = FeatureExtractor.load(manifest.features, directory)
            tokenizer = Tokenizer.load(manifest.tokenizer, directory, manifest.decoding.vocab_size)
            on_device = checked_device not in (None, "cpu")  # argmax on a GPU; on a CPU where decoding is int8
            argmax = argmax_step if argmax_step is not None else (True if on_device else None)
            model = OnnxTdtModel.load(manifest, directory, providers=providers, session=session,
                                      argmax=False if confidence is not None else argmax)
        if checked_device is not None:
            check_sessions(checked_device, [model.encoder_session, model.predictor_session, model.joint_session])
        decoding = manifest.decoding
        long_form = long_form or LongFormOptions()
        inference = Inference(
            model=model,
            tdt_config=TdtConfig(
                blank_id=decoding.blank_id, durations=decoding.durations, max_symbols=decoding.max_symbols
            ),
            transcripts=TranscriptBuilder(tokenizer, timestamp_config(manifest), decoding.blank_id, confidence),
            batching=batching,
            seconds_per_feature_frame=manifest.features.hop_length / manifest.features.sample_rate,
            pad_value=manifest.features.pad_value,
            memory_budget=long_form.budget,
            batch_invariant=batch_invariant(model, session.precision != "fp32"),
            batched_decoding=decoding_batch_invariant(model),
        )
        runner = make_runner(inference.run, batching)
        engine = cls(
            model_dir=directory,
            manifest=manifest,
            features=features,
            tokenizer=tokenizer,
            model=model,
            inference=inference,
            batching=batching,
            runner=runner,
            preparer=Preparer(features, manifest.encoder, long_form),
        )
        # The runner holds only the inference object, never the engine: stop it when the engine is
        # garbage-collected without close().
        weakref.finalize(engine, runner.close, 0)
        # Loading read and rewrote graphs; glibc keeps most of those freed buffers resident unless asked
        # (580 MB for the v3 shape's int8 directory: see memory.py).
        release_free_memory()
        return engine

    def close(self, *, drain: bool = False, timeout: float | None = 30.0) -> None:
        """Stop taking requests: every later call (single or list, sync or async) raises
        ``EngineClosedError``. The batch in progress always finishes. With ``drain=True`` every call already
        under way in another thread or task finishes whole, batching on or off (a list's or a long input's later
        pieces are still taken), and so do the requests waiting for the worker; without it those fail with
        ``EngineClosedError``. ``close`` waits up to ``timeout`` seconds in all (``None``: as long as it takes);
        a call still under way then fails at its next piece (the worker is a daemon thread: a process may exit
        without waiting). A ``transcribe_iter`` call lasts until its iterator is exhausted or closed. ``close``
        does not wait for the call it is made from (a progress callback), nor, on an event loop's thread, for that
        loop's async calls (it blocks the loop they need: ``await asyncio.to_thread(engine.close, drain=True)``).
        Idempotent; a later ``close()`` without ``drain`` cuts a drain short."""
        self.runner.close(timeout, drain=drain)

    def with_max_audio_seconds(self, seconds: float) -> Engine:
        """This engine, refusing inputs longer than ``seconds`` (``AudioTooLongError``, from the declared length
        before decoding, and while decoding a file whose header declares none), or itself when its own
        ``LongFormOptions.max_audio_seconds`` is already no longer. Everything else is shared (graphs, runner:
        closing either closes both). A server holds each upload to its own limit so
        (:func:`~parakeet_runtime.engine.serving.server.create_app` does).

        Raises:
            OptionsError: ``seconds`` is not a positive finite number.
        """
        long_form = self.preparer.long_form
        limited = dataclasses.replace(long_form, max_audio_seconds=seconds)  # checks seconds
        if long_form.max_audio_seconds is not None and long_form.max_audio_seconds <= seconds:
            return self
        return dataclasses.replace(self, preparer=dataclasses.replace(self.preparer, long_form=limited),
                                   _shares_with=self._shares_with or self)

    def __enter__(self) -> Engine:
        return self

    def __copy__(self) -> Engine:
        """The engine itself: it is immutable, and a copy would share (and close) the same worker."""
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Engine:
        return self

    def __reduce__(self) -> Any:
        raise TypeError(
            "an Engine cannot be pickled (its ONNX Runtime sessions and worker belong to this process): "
            f"load one in each process instead, Engine.load({str(self.model_dir)!r})"
        )

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @property
    def sample_rate(self) -> int:
        """The rate the model expects; other rates are resampled."""
        return self.manifest.features.sample_rate

    @overload
    def transcribe(self, audio: AudioInput, *, sample_rate: int | None = None) -> Transcript: ...

    @overload
    def transcribe(self, audio: list[AudioInput], *, sample_rate: int | None = None) -> list[Transcript]: ...

    def transcribe(
        self, audio: AudioInput | list[AudioInput], *, sample_rate: int | None = None
    ) -> Transcript | list[Transcript]:
        """Transcribe one input, or a list of inputs (list in, list out).

        Args:
            audio: a path, encoded file bytes (``bytes``, ``bytearray``, ``memoryview``, or a binary file object
                such as an upload's or ``io.BytesIO``, read to its end), a float/int PCM array (``(n,)`` or
                ``(n, channels)``), or an ``(array, sample_rate)`` pair; or a list of these.
            sample_rate: the rate of bare arrays. Default: the model's rate (16 kHz for Parakeet) — a bare
                array at another rate must say so, or it is misread. Files and pairs carry their own rate (an
                invalid ``sample_rate`` is refused even so).

        Raises:
            AudioFileNotFoundError: a path that does not exist.
            AudioDecodeError: an input that is not decodable audio (for a list: the first such input;
                nothing is transcribed).
            AudioTooLongError: audio longer than ``LongFormOptions.max_audio_seconds``.
            EngineClosedError: the engine was closed.
            EngineOverloadedError: the batcher's queue is full.
        """
        with self.runner.call():
            check_sample_rate_argument(sample_rate)
            if isinstance(audio, list):
                prepared = [self._prepare_list_item(index, item, sample_rate) for index, item in enumerate(audio)]
                return self._run_list(prepared)
            submitted = self._submit(audio, sample_rate)
            if isinstance(submitted, LongAudio):
                return self._run_long(submitted)
            return _transcript(_wait(submitted))

    def warm_up(self, seconds: float = 60.0, *, batch: int = 1) -> float:
        """Run ``batch`` inputs of ``seconds`` of silence through the whole request path once; returns the
        seconds it took (the transcripts are dropped; nothing the engine keeps between requests changes).

        A runtime may pay extra on its first run at an input longer than any it ran before: ONNX Runtime grows
        its buffers (about 3 s more at Parakeet's size for the first 30 s and 60 s inputs), OpenVINO also
        prepares its kernels for the larger shape (4–12 s more for the first 60 s input; benchmarks/README.md,
        "First runs"). Shorter inputs after a longer one do not pay again. A server that warms up with the
        longest input it expects in one pass (and the batch it expects) serves its first requests at full
        speed; ``parakeet-runtime serve --warm-up-seconds S`` does this before it accepts requests.

        Raises:
            OptionsError: ``seconds`` not a positive finite number, ``batch`` not a positive integer (a
                ``ValueError``).
            AudioTooLongError: ``seconds`` beyond ``LongFormOptions.max_audio_seconds``.
            EngineClosedError: the engine was closed.
        """
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 < seconds < math.inf:
            raise OptionsError("Engine.warm_up", "seconds", "a positive finite number", seconds,
                               message=f"warm_up seconds must be a positive finite number, got {seconds!r:.40}")
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise OptionsError("Engine.warm_up", "batch", "a positive integer", batch,
                               message=f"warm_up batch must be a positive integer, got {batch!r:.40}")
        silence = np.zeros(max(1, round(seconds * self.sample_rate)), dtype=np.float32)
        started = time.perf_counter()
        self.transcribe([silence] * batch)
        took = time.perf_counter() - started
        logger.debug("warmed up on %d × %.1f s of silence in %.2f s", batch, seconds, took)
        return took

    def transcribe_iter(
        self,
        audio: AudioInput,
        *,
        sample_rate: int | None = None,
        progress: Callable[[float, float], None] | None = None,
    ) -> Generator[TranscriptUpdate, None, None]:
        """Transcribe one input, yielding words and segments as they become final: after each group of chunks
        of a long input (one update for an input transcribed in one pass). The last update carries the whole
        transcript (the same as :meth:`transcribe` gives).

        Args:
            audio, sample_rate: as :meth:`transcribe` (one input).
            progress: called with (seconds transcribed, seconds in all) after each update is computed.

        Raises:
            As :meth:`transcribe`, when the input is prepared (before the first update) or while it runs.
        """
        runner = self.runner
        runner.check_open()
        calls = runner.calls
        updates = self._updates(audio, sample_rate, progress)  # a generator: nothing runs yet
        call = calls.begin()  # the call lasts until the iterator is exhausted or closed; its code runs in whichever
        try:  # context resumes it, so each step marks that context as inside the call (close from there: no wait)
            while True:
                with calls.inside(call):
                    update = next(updates, None)
                if update is None:
                    return
                yield update
        finally:
            with calls.inside(call):
                updates.close()  # a long input's futures are cancelled (a no-op once exhausted)
            calls.end(call)

    def _updates(self, audio: AudioInput, sample_rate: int | None,
                 progress: Callable[[float, float], None] | None) -> Generator[TranscriptUpdate, None, None]:
        check_sample_rate_argument(sample_rate)
        submitted = self._submit(audio, sample_rate)
        if isinstance(submitted, LongAudio):
            yield from self._long_updates(submitted, progress)
            return
        transcript = _transcript(_wait(submitted))
        if progress is not None:
            progress(transcript.duration, transcript.duration)
        yield TranscriptUpdate(transcript.words, transcript.segments, transcript.duration, transcript.duration,
                               transcript, transcript.warnings)

    def _submit(self, audio: AudioInput, sample_rate: int | None) -> Future[Outcome] | LongAudio:
        """Prepare one input and submit it when it runs in one pass (a long input comes back to be run)."""
        runner = self.runner
        with runner.arriving():
            with runner.preparing():
                one = self.prepare(audio, sample_rate=sample_rate)
            return one if isinstance(one, LongAudio) else runner.submit_many([one])[0]

    @overload
    async def transcribe_async(self, audio: AudioInput, *, sample_rate: int | None = None) -> Transcript: ...

    @overload
    async def transcribe_async(
        self, audio: list[AudioInput], *, sample_rate: int | None = None
    ) -> list[Transcript]: ...

    async def transcribe_async(
        self, audio: AudioInput | list[AudioInput], *, sample_rate: int | None = None
    ) -> Transcript | list[Transcript]:
        """``transcribe`` for asyncio, on the same request path: decoding and features run in the default
        executor, the graphs in the runner (the batcher's worker, or an executor thread when batching is
        off); the event loop is never blocked.

        Cancelling the awaiting task drops requests that have not started yet.
        """
        with self.runner.call():
            return await self._transcribe_async(audio, sample_rate)

    async def _transcribe_async(
        self, audio: AudioInput | list[AudioInput], sample_rate: int | None
    ) -> Transcript | list[Transcript]:
        runner = self.runner
        check_sample_rate_argument(sample_rate)
        loop = asyncio.get_running_loop()
        if isinstance(audio, list):
            prepared = [await loop.run_in_executor(None, self._prepare_list_item, index, item, sample_rate)
                        for index, item in enumerate(audio)]
            return await self._run_list_async(prepared)

        abandoned = Abandonment()  # set when the awaiting task is cancelled: the threads stop at the next step

        def prepare_and_submit() -> Future[Outcome] | LongAudio | None:  # an executor thread: may wait for a slot
            with runner.preparing():
                if abandoned.is_set():  # its caller left while it waited for the slot: nothing is decoded
                    return None
                one = self.prepare(audio, sample_rate=sample_rate)
            if abandoned.is_set():
                return None  # its caller left while it was decoded: nothing goes to the worker
            if isinstance(one, LongAudio):
                return one
            (future,) = runner.submit_many([one])
            abandoned.track([future])  # cancelled if the caller left since (this return value is then nobody's)
            return future

        try:
            with runner.arriving():
                submitted = await loop.run_in_executor(None, prepare_and_submit)
            if submitted is None:
                raise asyncio.CancelledError
            if isinstance(submitted, LongAudio):
                return await loop.run_in_executor(None, self._run_long, submitted, abandoned)
            return _transcript(await asyncio.wrap_future(submitted))
        except asyncio.CancelledError:
            abandoned.abandon()
            raise

    def prepare(self, source: AudioInput, *, sample_rate: int | None = None) -> Prepared:
        """Decode, resample and featurise one input (the part of a request that may fail on bad input);
        ``sample_rate`` as in :meth:`transcribe`. An input too long for one pass comes back as a
        ``LongAudio`` (its features, normalised over the whole input as one pass's, and the windows of its chunks).

        Raises:
            AudioDecodeError, AudioFileNotFoundError, AudioTooLongError: as :meth:`transcribe`.
        """
        return self.preparer(source, sample_rate)

    def _prepare_in_slot(self, source: AudioInput, sample_rate: int | None) -> Prepared:
        with self.runner.preparing():
            return self.prepare(source, sample_rate=sample_rate)

    def _prepare_list_item(self, index: int, source: AudioInput, sample_rate: int | None) -> Prepared:
        """Item ``index`` of a list input, prepared; an input that is not a path (whose error names it) gets its
        position in the list named in its error."""
        try:
            return self._prepare_in_slot(source, sample_rate)
        except ParakeetRuntimeError as exc:
            if not isinstance(source, (str, os.PathLike)) and exc.args and isinstance(exc.args[0], str):
                exc.args = (f"list item {index}: {exc.args[0]}", *exc.args[1:])
            raise

    def _list_chunks(self, prepared: Sequence[Prepared]) -> tuple[list[list[int]], int]:
        """Indices of a list's one-pass requests, sorted by length, in chunks the worker takes as one batch
        (long inputs run on their own, after them), and how many chunks may be queued at once: within
        ``max_queue`` together, so that an idle engine always takes a list (chunks of ``max_batch_size``,
        :data:`LIST_CHUNKS_IN_FLIGHT` at once, refused every list of more than 16 under ``max_queue=31``)."""
        order = sorted((i for i, p in enumerate(prepared) if isinstance(p, PreparedAudio)),
                       key=lambda i: prepared[i].valid_frames)
        size, in_flight = self.batching.max_batch_size, LIST_CHUNKS_IN_FLIGHT
        limit = self.batching.max_queue
        if limit is not None and size * in_flight > limit:
            in_flight = max(1, min(in_flight, limit // size))
            size = min(size, max(1, limit // in_flight))
        return [order[start : start + size] for start in range(0, len(order), size)], in_flight

    def _run_list(self, prepared: Sequence[Prepared]) -> list[Transcript]:
        futures: dict[int, Future[Outcome]] = {}
        chunks, in_flight = self._list_chunks(prepared)
        try:
            for number, chunk in enumerate(chunks):
                if number >= in_flight:
                    concurrent.futures.wait([futures[i] for i in chunks[number - in_flight]])
                # the later chunks are the rest of a request already taken: they wait for room under max_queue
                futures.update(zip(chunk, self.runner.submit_many([_one_pass(prepared[i]) for i in chunk],
                                                                  continuing=number > 0), strict=True))
            long: dict[int, Transcript] = {}
            for i, p in enumerate(prepared):
                if isinstance(p, LongAudio):
                    long[i] = self._run_long(p, continuing=bool(chunks or long))
            return [long[i] if i in long else _transcript(futures[i].result()) for i in range(len(prepared))]
        finally:
            for future in futures.values():
                future.cancel()  # a no-op for finished ones; drops the rest after an error

    async def _run_list_async(self, prepared: Sequence[Prepared]) -> list[Transcript]:
        loop = asyncio.get_running_loop()
        futures: dict[int, Future[Outcome]] = {}
        chunks, in_flight = self._list_chunks(prepared)
        abandoned = Abandonment()  # set when the awaiting task is cancelled: a long input stops there
        try:
            for number, chunk in enumerate(chunks):
                if number >= in_flight:
                    earlier = [asyncio.wrap_future(futures[i]) for i in chunks[number - in_flight]]
                    await asyncio.wait(earlier)
                submitted = await loop.run_in_executor(None, functools.partial(
                    self._submit_unless_abandoned, [_one_pass(prepared[i]) for i in chunk], abandoned, number > 0))
                futures.update(zip(chunk, submitted, strict=True))
            long: dict[int, Transcript] = {}
            for i, p in enumerate(prepared):
                if isinstance(p, LongAudio):
                    long[i] = await loop.run_in_executor(None, functools.partial(
                        self._run_long, p, abandoned, continuing=bool(chunks or long)))
            return [long[i] if i in long else _transcript(await asyncio.wrap_future(futures[i]))
                    for i in range(len(prepared))]
        except asyncio.CancelledError:
            abandoned.abandon()
            raise
        finally:
            for future in futures.values():
                future.cancel()

    def _submit_unless_abandoned(self, requests: Sequence[PreparedAudio], abandoned: Abandonment,
                                 continuing: bool) -> list[Future[Outcome]]:
        """Submit an async list's chunk (in an executor thread, where it may wait for room under ``max_queue``),
        handed to ``abandoned``: cancelled when its caller left meanwhile, or leaves before this returns (the
        futures would then be nobody's to cancel)."""
        submitted = self.runner.submit_many(requests, continuing=continuing)
        abandoned.track(submitted)
        return submitted

    # --- long inputs -------------------------------------------------------------------------------

    def _run_long(self, long: LongAudio, abandoned: Abandonment | None = None, *,
                  continuing: bool = False) -> Transcript:
        """Transcribe a long input chunk group by chunk group (blocks; runs the groups on the runner). With
        ``abandoned`` set (its caller is gone), it stops before the next group and raises
        :class:`concurrent.futures.CancelledError`. ``continuing``: the input is part of a request already taken
        (a list's), so even its first group waits for room under ``max_queue``."""
        for update in self._long_updates(long, None, continuing=continuing):
            if update.transcript is not None:
                return update.transcript
            if abandoned is not None and abandoned.is_set():
                raise concurrent.futures.CancelledError("the caller of a long transcription left")
        raise RuntimeError("a long input ended without a transcript")

    def _long_updates(self, one: LongAudio, progress: Callable[[float, float], None] | None, *,
                      continuing: bool = False) -> Iterator[TranscriptUpdate]:
        """The updates of :meth:`transcribe_iter` for a long input: the words and segments that became final
        with each chunk group; the last carries the whole transcript."""
        words_sent = segments_sent = 0
        tokens: list[DecodedToken] = []
        steps: list[StepConfidence] = []
        seconds_per_frame = self.manifest.encoder.subsampling_factor * self.manifest.features.window_stride
        outcomes = self._long_outcomes(one, continuing)
        try:
            for outcome, last in outcomes:
                tokens += outcome.tokens
                steps += outcome.steps or ()
                partial = self._long_transcript(one, tokens, steps if outcome.steps is not None else None)
                words = partial.words if last else partial.words[:-1]
                segments = partial.segments if last else partial.segments[:-1]
                processed = one.duration if last else min(outcome.frames * seconds_per_frame, one.duration)
                if progress is not None:
                    progress(processed, one.duration)
                yield TranscriptUpdate(words[words_sent:], segments[segments_sent:], processed, one.duration,
                                       partial if last else None, one.warnings)
                words_sent, segments_sent = max(len(words), words_sent), max(len(segments), segments_sent)
        finally:
            outcomes.close()

    def _long_transcript(self, long: LongAudio, tokens: Sequence[DecodedToken],
                         steps: Sequence[StepConfidence] | None) -> Transcript:
        transcript = self.inference.transcripts(tokens, long.duration, steps, warnings=long.warnings)
        return dataclasses.replace(transcript, strategy="chunked")

    def _long_outcomes(self, long: LongAudio, continuing: bool = False,
                       ) -> Generator[tuple[ChunkOutcome, bool], None, None]:
        """Submit a long input's windows in groups, each continuing the search where the one before stopped;
        the next group's features are computed while the worker runs the current one. Each group's outcome
        comes as soon as it is done, with a flag that is true for the last group. The first group is admitted
        under ``max_queue`` as a new request (unless ``continuing``: part of a request already taken); the later
        groups wait for room instead of failing with ``EngineOverloadedError`` half-way."""
        runner = self.runner
        spec = self.manifest.features
        size = group_size(self.preparer.geometry, spec.sample_rate, self.batching.max_batch_size,
                          self.batching.max_batch_seconds)
        batches = groups(long.windows, size)
        carry: TdtCarry[Any] | None = None
        features = self._window_features(long, batches[0])
        future: Future[Outcome] | None = None
        try:
            for number, windows in enumerate(batches):
                (future,) = runner.submit_many([ChunkGroup(features[0], features[1], tuple(windows), carry)],
                                               continuing=continuing or number > 0)
                if number + 1 < len(batches):
                    features = self._window_features(long, batches[number + 1])
                outcome = future.result()
                if not isinstance(outcome, ChunkOutcome):
                    raise TypeError(f"expected a ChunkOutcome, got {type(outcome).__name__}")
                carry = outcome.carry
                yield outcome, number + 1 == len(batches)
        finally:
            if future is not None:
                future.cancel()

    def _window_features(self, long: LongAudio, windows: Sequence[Window]) -> tuple[tuple[Any, ...], tuple[int, ...]]:
        arrays, valid = [], []
        for window in windows:
            with self.runner.preparing():
                features, frames = self.preparer.window_features(long, window)
            arrays.append(features)
            valid.append(frames)
        return tuple(arrays), tuple(valid)


def _wait(future: Future[Outcome]) -> Outcome:
    """The request's outcome; a wait interrupted (Ctrl-C in the calling thread) drops the request if the worker
    has not taken it yet, instead of leaving it queued to run for nobody."""
    try:
        return future.result()
    except BaseException:
        future.cancel()  # a no-op once it runs or is done
        raise


def _transcript(outcome: Outcome) -> Transcript:
    """The runner's outcome for a one-pass request."""
    if not isinstance(outcome, Transcript):
        raise TypeError(f"expected a Transcript, got {type(outcome).__name__}")
    return outcome


def _one_pass(prepared: Prepared) -> PreparedAudio:
    if not isinstance(prepared, PreparedAudio):
        raise TypeError("a long input cannot run in one pass")
    return prepared
