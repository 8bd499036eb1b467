"""ONNX Runtime sessions for the encoder, predictor and joint, and the TDT step functions over them.

Sessions are created once and only ever ``run``, which ONNX Runtime documents as thread-safe.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeAlias

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from parakeet_runtime.decoding import FloatArray, JointChoices, JointOutput

from ..errors import ManifestError
from ..options import DecoderWeights, SessionOptions
from .cpu import int8_weights_for_this_cpu, x86_without_int8_dot_products
from .decoder_weights import ChoiceOutputs, JointColumns, checked_ranking_graph, int8_decoding_graph
from .devices import (
    ARGMAX_DURATION,
    ARGMAX_LABEL,
    ARGMAX_PROVEN,
    ARGMAX_WIDTH,
    Provider,
    argmax_graph,
    provider_name,
)
from .manifest import UNRECORDED_ACTIVATIONS, Manifest

logger = logging.getLogger(__name__)

LstmState: TypeAlias = tuple[FloatArray, FloatArray]
"""``(h, c)``, each of shape ``(layers, 1, hidden)``."""


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, else the CPU."""
    available = ort.get_available_providers()
    preferred = [p for p in ("CUDAExecutionProvider",) if p in available]
    return [*preferred, "CPUExecutionProvider"]


Spin: TypeAlias = Literal["no", "in_runs", "yes"]
"""How a session's idle intra-op threads wait for work. ``no``: asleep, so that every parallel part of a run wakes
them (tens of µs each on a virtual machine; a decoding step has a dozen such parts); ``in_runs``: spinning while a
run is in progress and asleep as soon as it returns (ONNX Runtime's ``session.force_spinning_stop``), so a run pays
one wake-up and nothing spins between runs; ``yes``: spinning between runs too (lowest latency on idle cores, CPU
taken from everything else on them)."""


def spin_asked(spinning: bool) -> Spin:
    """A pool as ``SessionOptions.spinning`` asks (the encoder's, a large predictor's): ``yes``, or ``no``."""
    return "yes" if spinning else "no"


def session_options(threads: int | None, spin: Spin) -> ort.SessionOptions:
    """The ONNX Runtime options every graph of the engine is opened with (benchmarks reuse them)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.inter_op_num_threads = 1
    if threads is not None:
        options.intra_op_num_threads = threads
    options.add_session_config_entry("session.intra_op.allow_spinning", "0" if spin == "no" else "1")
    if spin == "in_runs":
        options.add_session_config_entry("session.force_spinning_stop", "1")
    options.log_severity_level = 3
    return options


def graph_session(
    source: Path | bytes, providers: Sequence[Provider], threads: int | None, spin: Spin, *, name: str = "",
) -> ort.InferenceSession:
    """A session on a graph file, or on a serialised graph (``bytes``: graphs cut or rewritten at load time,
    from the file ``name``, which errors name).

    Raises:
        ManifestError: ONNX Runtime cannot load the graph.
    """
    options = session_options(threads, spin)
    name = source.name if isinstance(source, Path) else f"{name or 'a graph'} (as made at load)"
    try:
        model = str(source) if isinstance(source, Path) else source
        session = ort.InferenceSession(model, sess_options=options, providers=list(providers))
    except Exception as exc:  # onnxruntime raises its own untyped exceptions here
        raise ManifestError(f"{name}: ONNX Runtime cannot load this graph ({exc})") from exc
    if isinstance(source, bytes):
        _forget_graph_bytes(session)
    return session


def _forget_graph_bytes(session: ort.InferenceSession) -> None:
    """Drop the serialised graph that ONNX Runtime's Python session keeps for its whole life when it was opened
    from ``bytes`` (to open it again on other providers, after a provider error or ``set_providers``; its source
    calls this a TODO). A graph made at load holds every weight of the file it came from: Parakeet v3's step graph
    is 126 MB, and the three graphs of its exact path's proven ranking kept about 200 MB resident for nothing.

    The session built its own copy of the weights from those bytes, and the engine never asks it to open the
    graph again: its fall-back to other providers is turned off first (it would print and reopen on the CPU; the
    engine checks its sessions' providers at load instead, ``devices.check_sessions``)."""
    session.disable_fallback()
    if getattr(session, "_model_bytes", None) is not None:
        session._model_bytes = None


def _check_names(
    session: ort.InferenceSession, file: str, section: str, inputs: Sequence[str], outputs: Sequence[str]
) -> None:
    """The graph has the inputs and outputs its manifest section names (checked at load, not at the first
    request; the predictor and the step graph are checked by running them at load).

    Raises:
        ManifestError: a name the graph lacks.
    """
    for kind, names, present in (
        ("input", inputs, [i.name for i in session.get_inputs()]),
        ("output", outputs, [o.name for o in session.get_outputs()]),
    ):
        for name in names:
            if name not in present:
                raise ManifestError(
                    f"{file}: the graph has no {kind} {name!r:.80} (manifest section {section!r}); "
                    f"its {kind}s: {', '.join(present)}"
                )


STEP_GRAPH_THREADING_BYTES = 8_000_000
"""A step graph (predictor, joint) this large runs on the encoder's threads; a smaller one on one thread."""


def step_graph_session(
    source: Path | bytes, providers: Sequence[Provider], threads: int | None, *, spin: bool, name: str = "",
) -> ort.InferenceSession:
    """A per-step graph (the step graph or the predictor, the joint) runs once per decoding step. A
    small one (the fixtures', Parakeet v2's joint) is fastest on one thread: a thread pool costs more than
    it saves. A large one is bound by reading its weights from memory on every step (Parakeet's
    predictor: 21 MB of LSTM weights, 1.5 ms per step on one core of the benchmark machine), so it gets
    the encoder's threads. Its threads spin between runs only where ``spin`` says (the predictor's pool,
    when ``SessionOptions.spinning`` is on; never two spinning pools, which fight for the cores): on a quiet
    machine spinning saved a quarter of the v3 shape's fp32 decoding and nothing with int8 decoding weights,
    but beside one busy process it doubled decoding (benchmarks/decoding_threads.py, Zen 4, 2026-12-03), and in
    a server the request threads computing features are such processes. Spinning only while a run is in progress
    (:data:`Spin` ``in_runs``) is not the default either: it made the v3 shape's int8 step 35% faster replayed
    back to back, but the whole search was 7% faster in one run and 7% slower in another on a quiet machine, and
    15–22% slower beside one busy process (benchmarks/README.md, "Decoding threads:
    parakeet-v3-shape-int8-zen4-in-runs")."""
    size = len(source) if isinstance(source, bytes) else (source.stat().st_size if source.is_file() else 0)
    if size < STEP_GRAPH_THREADING_BYTES:
        return graph_session(source, providers, 1, "no", name=name)
    return graph_session(source, providers, threads, spin_asked(spin), name=name)


def on_cpu(providers: Sequence[Provider]) -> bool:
    """Whether ``providers`` run the graphs on the CPU (ONNX Runtime's CPU provider first)."""
    return [provider_name(p) for p in providers[:1]] == ["CPUExecutionProvider"]


def chosen_decoder_weights(
    session: SessionOptions, providers: Sequence[Provider], encoder_precision: str
) -> DecoderWeights:
    """``session.decoder_weights`` resolved: ``auto`` is ``int8`` where the encoder's results already are not
    NeMo's (an int8 encoder graph, OpenVINO ``bf16``), the graphs run on the CPU and the CPU has int8 dot
    products (not an x86 CPU without VNNI or AMX, whose int8 kernels add pairs of products in saturating 16-bit
    lanes: there a forced ``int8`` logs a warning), else ``fp32``."""
    cpu = on_cpu(providers)
    saturating = cpu and x86_without_int8_dot_products()
    if session.decoder_weights != "auto":
        if session.decoder_weights == "int8" and saturating:
            logger.warning("decoder_weights='int8' on a CPU without VNNI or AMX: ONNX Runtime's int8 products may "
                           "saturate here, so decoding may differ more from fp32 than on a VNNI CPU")
        return session.decoder_weights
    reduced = encoder_precision != "fp32" or (session.backend == "openvino" and session.precision != "fp32")
    return "int8" if reduced and cpu and not saturating else "fp32"


def decoding_graph(source: Path | bytes, name: str, weights: DecoderWeights, joint: JointColumns) -> Path | bytes:
    """A decoding graph (step graph, predictor, joint) as ``weights`` asks: ``source`` itself for ``fp32``
    (and for graphs with nothing to rewrite), else its int8 rewrite (:mod:`.decoder_weights`) in memory, the
    joint's best labels and durations scored in fp32 (``joint``: its columns)."""
    if weights != "int8":
        return source
    rewritten = int8_decoding_graph(source, name, joint)
    if rewritten is None:
        logger.info("%s: no fp32 products to give int8 weights; left as it is", name)
        return source
    logger.info("%s: int8 decoding weights (%d products, %d LSTM steps, %d joint output layers with fp32 best "
                "labels; %.1f MB of fp32 weights read per step before)", name, rewritten.products, rewritten.lstms,
                rewritten.exact_top, rewritten.fp32_bytes / 1e6)
    return rewritten.data


def choice_graph(source: Path | bytes, logits: str, name: str, weights: DecoderWeights,
                 joint: JointColumns, *, proven: bool = False) -> tuple[bytes, bool]:
    """A decoding graph whose ``logits`` output is replaced by its argmaxes (:data:`.devices.ARGMAX_LABEL`,
    :data:`.devices.ARGMAX_DURATION`), and whether it reads int8 weights: with ``weights`` ``int8``, the int8
    rewrite ending in the joint's choices (no full-width logits are made) where the graph allows it; with ``fp32``
    and ``proven``, the fp32 graph whose joint ranks its labels in int8 with a proof
    (:func:`.decoder_weights.checked_ranking_graph`; :data:`.devices.ARGMAX_PROVEN` says which rows are proven) where
    the graph allows it; else argmax heads after the logits (:func:`.devices.argmax_graph`), rewritten as
    ``weights`` asks.

    Raises:
        ManifestError: the graph has no such output.
    """
    if weights == "int8":
        choices = ChoiceOutputs(logits, ARGMAX_LABEL, ARGMAX_DURATION, ARGMAX_WIDTH)
        rewritten = int8_decoding_graph(source, name, joint, choices=choices)
        if rewritten is not None and rewritten.choices:
            logger.info("%s: int8 decoding weights, ending in the joint's choices", name)
            return rewritten.data, True
    elif proven:
        choices = ChoiceOutputs(logits, ARGMAX_LABEL, ARGMAX_DURATION, ARGMAX_WIDTH, proven=ARGMAX_PROVEN)
        checked = checked_ranking_graph(source, name, joint, choices)
        if checked is not None:
            logger.info("%s: fp32 decoding weights; the joint ranks its labels in int8 and proves its choices", name)
            return checked.data, False
    heads = argmax_graph(source, logits, joint.labels, name)
    graph = decoding_graph(heads, name, weights, joint)
    assert isinstance(graph, bytes)  # argmax_graph made it in memory
    return graph, graph is not heads


PROVEN_RANKING_MIN_WEIGHTS = 2_000_000
"""Weights of the joint's label columns (labels × joint hidden) from which the exact path's joint ranks its labels
in int8 with a proof by default (Parakeet v3's 8,193 × 640; not v2's 1,025 × 640): see
:func:`proven_ranking_pays`."""


def proven_ranking_pays(manifest: Manifest, providers: Sequence[Provider]) -> bool:
    """Whether fp32 decoding ranks the joint's labels in int8 with a proof by default: on the CPU, for joints of
    :data:`PROVEN_RANKING_MIN_WEIGHTS` label weights or more (measured in benchmarks/README.md)."""
    labels = joint_columns(manifest).labels
    return on_cpu(providers) and labels * manifest.encoder.joint_hidden >= PROVEN_RANKING_MIN_WEIGHTS


STEP_ROWS_CHECKED = (5, 17)
"""Rows :meth:`OnnxTdtModel.rows_decode_alike` runs through the step graph at once (odd counts, one past a
power of two: kernels that work in pairs or blocks of rows leave a remainder); the batched search runs it on at
most a batch's rows (``BatchingOptions.max_batch_size``, 16 by default), one frame each."""
JOINT_ROWS_CHECKED = (5, 17, 97)
"""Rows :meth:`OnnxTdtModel.rows_decode_alike` runs through the joint alone at once: up to one past the 16 rows
of a default batch times the batched search's 6 frames of lookahead."""


def _joint_arrays(output: JointOutput) -> tuple[npt.NDArray[Any], ...]:
    """A joint output's arrays, rows first: the logits, or the choices' labels and duration indices."""
    if isinstance(output, JointChoices):
        return output.label, output.duration_index
    return (output,)


def _has_output(session: ort.InferenceSession, name: str) -> bool:
    return any(output.name == name for output in session.get_outputs())


def joint_columns(manifest: Manifest) -> JointColumns:
    """The joint's label columns (vocabulary and blank) and all its columns, from the manifest."""
    return JointColumns(labels=manifest.decoding.blank_id + 1, width=manifest.joint.num_outputs)


@dataclass(frozen=True, eq=False)
class DecodingSessions:
    """The sessions a search runs every step: the predictor (or the step graph) and the joint."""

    predictor: ort.InferenceSession
    joint: ort.InferenceSession
    weights: DecoderWeights
    """``int8`` when at least one of the two graphs runs its int8 rewrite."""
    argmax: bool = False
    """The graphs that gave logits give their argmaxes instead (:func:`choice_graph`)."""
    fallback: ort.InferenceSession | None = None
    """Where a graph proves its choices (:data:`.devices.ARGMAX_PROVEN`): the joint's fp32 graph with argmax heads,
    which makes the choices of the rows left unproven."""
    proven: tuple[bool, bool] = (False, False)
    """Whether the predictor (or step graph) and the joint prove their choices (have :data:`.devices.ARGMAX_PROVEN`)."""


def decoding_sessions(
    predictor: tuple[Path | bytes, str], joint: tuple[Path | bytes, str], columns: JointColumns,
    providers: Sequence[Provider], session: SessionOptions, encoder_precision: str,
    argmax_of: tuple[str | None, str] | None = None, weights: DecoderWeights | None = None, proven: bool = False,
) -> DecodingSessions:
    """Sessions on the predictor (or step graph) and joint graphs, each ``(source, name)``, with the decoder
    weights :func:`chosen_decoder_weights` picks (every layout loads its decoding graphs through here; ``weights``:
    already picked); ``columns``: the joint's label and total columns. ``argmax_of``: the logits outputs of the two
    graphs (``None`` for a predictor without the joint), to be replaced by their argmaxes (:func:`choice_graph`);
    ``proven``: with fp32 weights, choices ranked in int8 with a proof, and the fp32 joint for the rows it leaves."""
    weights = weights or chosen_decoder_weights(session, providers, encoder_precision)
    logits_outputs = argmax_of or (None, None)
    sessions, rewritten = [], False
    for (source, name), spin, logits in ((predictor, session.spinning, logits_outputs[0]),
                                         (joint, False, logits_outputs[1])):

        def graph_for(chosen: DecoderWeights, prove: bool, source: Path | bytes = source, name: str = name,
                      logits: str | None = logits) -> tuple[Path | bytes, bool]:
            """The graph with ``chosen`` weights (``prove``: choices proven where fp32), and whether it reads int8
            weights."""
            if logits is not None:
                return choice_graph(source, logits, name, chosen, columns, proven=prove and chosen == "fp32")
            graph = decoding_graph(source, name, chosen, columns)
            return graph, graph is not source

        graph, int8 = graph_for(weights, proven)
        try:
            sessions.append(step_graph_session(graph, providers, session.threads, spin=spin, name=name))
            rewritten |= int8
        except ManifestError as exc:
            if not int8 and not proven:
                raise
            logger.warning("%s: its %s does not load (%s); this graph keeps its fp32 weights", name,
                           "int8 rewrite" if int8 else "int8 ranking", exc)
            proven = False
            graph, _ = graph_for("fp32", False)
            sessions.append(step_graph_session(graph, providers, session.threads, spin=spin, name=name))
    fallback = None
    proving = (_has_output(sessions[0], ARGMAX_PROVEN), _has_output(sessions[1], ARGMAX_PROVEN))
    if argmax_of is not None and any(proving):
        heads = argmax_graph(joint[0], argmax_of[1], columns.labels, joint[1])
        fallback = step_graph_session(heads, providers, session.threads, spin=False, name=joint[1])
    return DecodingSessions(predictor=sessions[0], joint=sessions[1], weights="int8" if rewritten else "fp32",
                            argmax=argmax_of is not None, fallback=fallback, proven=proving)


def _release_arena_options() -> ort.RunOptions:
    """Run options that shrink the memory arenas at the end of a run (ONNX Runtime frees the chunks the
    run allocated beyond the initial ones). Never modified after creation, so shared by all runs."""
    options = ort.RunOptions()
    options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    return options


_RELEASE_ARENA = _release_arena_options()


def _warn_if_int8_saturates(file: str, weights: str | None, providers: Sequence[Provider]) -> None:
    """Signed int8 weights (``convert-model --int8-weights int8``) are exact only with int8 dot products."""
    if weights == "int8" and on_cpu(providers) and x86_without_int8_dot_products():
        logger.warning(
            "%s has signed int8 weights, and this CPU has no VNNI: ONNX Runtime's int8 products saturate "
            "here, so tokens may differ from a VNNI CPU's (load the directory's uint8 graph, "
            "SessionOptions(int8_weights='uint8'), or convert with --int8-weights uint8 or int7)", file,
        )


def encoder_graph(manifest: Manifest, int8_weights: str) -> tuple[str, str | None]:
    """Which encoder graph of the directory to load, and its int8 weight scheme (``None``: fp32, or not
    recorded). ``int8_weights``: ``auto`` (the signed graph where this CPU has VNNI or AMX and the
    directory has one, else ``encoder.file``) or a scheme name (that graph, or :class:`ManifestError`).

    Raises:
        ManifestError: a forced scheme the directory does not hold.
    """
    encoder = manifest.encoder
    quantization = manifest.provenance.quantization
    if quantization is None:
        if int8_weights != "auto":  # it was ignored: the directory's one graph loaded
            raise ManifestError(f"int8_weights={int8_weights!r}: this directory's encoder ({encoder.file}, "
                                f"{encoder.precision}) has no int8 weight schemes to choose from; leave it 'auto'")
        return encoder.file, None
    primary = quantization.weights
    graphs: dict[str | None, str] = {primary: encoder.file}
    if encoder.signed_int8_file is not None:
        graphs["int8"] = encoder.signed_int8_file
    if int8_weights == "auto":
        wanted = int8_weights_for_this_cpu()
        scheme = wanted if wanted in graphs else primary
    elif int8_weights in graphs:
        scheme = int8_weights
    else:
        held = ", ".join(str(name) for name in graphs if name is not None) or "an unrecorded scheme"
        raise ManifestError(f"int8_weights={int8_weights!r}: this directory's encoder has {held} weights only")
    return graphs[scheme], scheme


class EncoderSession(Protocol):
    """What runs the encoder: an ONNX Runtime session, or another backend's adapter with its ``run``."""

    def run(self, output_names: Sequence[str], input_feed: dict[str, Any], run_options: Any = None) -> Any: ...


def encoder_session(
    manifest: Manifest, model_dir: Path, providers: Sequence[Provider], session: SessionOptions
) -> tuple[EncoderSession, str]:
    """The encoder of ``model_dir`` on ``session.backend``: ONNX Runtime (the int8 graph chosen by
    :func:`encoder_graph`) or OpenVINO (fp32 directories); and the graph's file.

    Raises:
        ManifestError: the graph does not load or lacks its manifest's names; a forced int8 scheme the
            directory does not hold.
        BackendUnavailableError: OpenVINO is not installed, ``bf16`` without CPU support, OpenVINO on an
            int8 directory.
    """
    enc = manifest.encoder
    names = ((enc.input_features, enc.input_lengths), (enc.output_frames, enc.output_lengths))
    if session.backend == "openvino":
        from ..errors import BackendUnavailableError
        from .openvino_backend import OpenVinoEncoder

        if enc.precision != "fp32":
            raise BackendUnavailableError(
                f"backend='openvino' runs fp32 encoders; this directory's is {enc.precision} (OpenVINO "
                "makes bf16 or int8 from fp32 itself: precision='bf16' or 'int8')")
        logger.info("encoder %s on OpenVINO (%s); decoding on ONNX Runtime", enc.file, session.precision)
        return OpenVinoEncoder(model_dir / enc.file, precision=session.precision, threads=session.threads,
                               inputs=names[0], outputs=names[1], mels=manifest.features.n_mels), enc.file
    file, scheme = encoder_graph(manifest, session.int8_weights)
    if scheme is not None:
        quantization = manifest.provenance.quantization
        activations = (quantization.activations if quantization is not None and quantization.activations
                       else f"{UNRECORDED_ACTIVATIONS} (converted before per-row scales: re-converting cuts the int8 "
                       "error by about a third)")
        logger.info("int8 encoder %s: %s weights, activations %s (int8_weights=%r, this CPU prefers %s)", file,
                    scheme, activations, session.int8_weights, int8_weights_for_this_cpu())
    _warn_if_int8_saturates(file, scheme, providers)
    encoder = graph_session(model_dir / file, providers, session.threads, spin_asked(session.spinning))
    _check_names(encoder, file, "encoder", *names)
    result: EncoderSession = encoder
    return result, file


def release_above_frames(manifest: Manifest, seconds: float | None) -> int | None:
    """``SessionOptions.release_memory_above_seconds`` in feature frames (``None``: never release)."""
    if seconds is None:
        return None
    return int(seconds * manifest.features.sample_rate / manifest.features.hop_length)


def subsampling_by_difference(fed: tuple[int, int], encoded: tuple[int, int]) -> int | None:
    """The subsampling factor of an encoder that encoded ``fed`` feature frames (shorter first) to ``encoded``
    frames: the difference of the inputs over the difference of the outputs, so that a subsampling that adds
    a frame to every length (causal padding) measures as it is; ``None`` when it is not a whole number."""
    added, more = encoded[1] - encoded[0], fed[1] - fed[0]
    return more // added if added > 0 and more % added == 0 else None


CHECK_ENCODED_FRAMES = 8
"""Encoder frames of the longer input of the test run at load (:func:`check_encoder`)."""


def check_encoder(model: OnnxTdtModel, file: str) -> None:
    """Run the encoder once on a batch of two zero inputs, of a few encoder frames and of twice as many, and
    hold its outputs to the manifest: it takes ``n_mels`` bins, gives ``(batch, frames, joint_hidden)`` frames
    and one length per input, and subsamples by ``subsampling_factor`` (which sets every timestamp and the
    long-form windows; the ONNX graph does not declare it, so only a run shows it). The factor is measured
    as the difference of the two lengths, so that a subsampling that adds a frame (causal padding) passes.

    Raises:
        ManifestError: the encoder does not run on the manifest's features, or its outputs disagree with it.
    """
    manifest = model.manifest
    spec = manifest.encoder
    factor = spec.subsampling_factor
    longer = CHECK_ENCODED_FRAMES if spec.max_frames is None else max(1, min(CHECK_ENCODED_FRAMES, spec.max_frames))
    encoded = [longer // 2, longer] if longer > 1 else [longer]
    lengths_in = np.array([factor * k for k in encoded], dtype=np.int64)
    n_mels = manifest.features.n_mels
    try:
        outputs, lengths = model._encode(np.zeros((len(encoded), n_mels, int(lengths_in[-1])), dtype=np.float32),
                                        lengths_in)
    except Exception as exc:  # onnxruntime (or another backend) raises its own untyped exceptions here
        raise ManifestError(f"{file}: the encoder does not run on its manifest's features ({n_mels} mel bins, "
                            f"inputs {spec.input_features!r:.80} and {spec.input_lengths!r:.80}): {exc}") from exc
    outputs, lengths = np.asarray(outputs), np.asarray(lengths)
    rows = len(encoded)
    if lengths.shape != (rows,):
        raise ManifestError(f"{file}: the encoder's output {spec.output_lengths!r:.80} (manifest encoder."
                            f"output_lengths) has shape {lengths.shape} for {rows} inputs, not one length per input")
    if outputs.ndim != 3 or outputs.shape[0] != rows or outputs.shape[2] != spec.joint_hidden:
        raise ManifestError(f"{file}: the encoder's output {spec.output_frames!r:.80} (manifest encoder."
                            f"output_frames) has shape {outputs.shape}, not (batch, frames, {spec.joint_hidden}) "
                            "(encoder.joint_hidden)")
    got = [int(n) for n in lengths]
    if max(got) > outputs.shape[1] or min(got) < 1:
        raise ManifestError(f"{file}: the encoder gives lengths {got} for {outputs.shape[1]} frames")
    if rows == 2:
        measured = subsampling_by_difference((int(lengths_in[0]), int(lengths_in[1])), (got[0], got[1]))
        if measured != factor:
            said = "does not subsample evenly" if measured is None else f"subsamples by {measured}"
            raise ManifestError(f"{file}: {int(lengths_in[1] - lengths_in[0])} more feature frames encode to "
                                f"{got[1] - got[0]} more frames: the encoder {said}, but the manifest's "
                                f"encoder.subsampling_factor is {factor}")


@dataclass(frozen=True, eq=False)
class EncoderProjection:
    """A graph run on the encoder's output before decoding, for layouts whose encoder stops before the
    joint's encoder projection (onnx-asr's): ``(batch, d_model, frames)`` in, projected frames
    ``(batch, frames, joint_hidden)`` out. Each frame is projected once, not once per decoding step."""

    session: ort.InferenceSession
    input: str
    output: str


def _check_joint_width(manifest: Manifest, file: str, width: int) -> None:
    """The joint's logits are as wide as the manifest says (labels and durations).

    Raises:
        ManifestError: they are not.
    """
    if width != manifest.joint.num_outputs:
        raise ManifestError(
            f"{file}: the joint gives {width} logits, but the manifest says {manifest.joint.num_outputs} (vocabulary "
            f"{manifest.decoding.vocab_size} + blank + {len(manifest.decoding.durations)} durations)")


@dataclass(frozen=True, eq=False)
class OnnxTdtModel:
    """The graphs of a TDT model. Immutable; every method is safe to call from many threads."""

    manifest: Manifest
    encoder_session: EncoderSession
    predictor_session: ort.InferenceSession
    """Runs the prediction network: the step graph (predictor and joint in one) when the directory has
    one, else the predictor graph."""
    joint_session: ort.InferenceSession
    release_above_frames: int | None = None
    """Encoder runs on more feature frames than this (batch × padded width) release the arena's growth."""
    encoder_projection: EncoderProjection | None = None
    """Applied to the encoder's output when the encoder graph does not project its frames itself."""
    argmax: bool = False
    """The step graph and the joint return their argmaxes, not logits (see :meth:`load`): the search gets
    :class:`~parakeet_runtime.decoding.JointChoices`."""
    encoder_file: str = ""
    """The encoder graph loaded, relative to the model directory: for an int8 directory holding two weight
    schemes, the one ``SessionOptions.int8_weights`` chose (``manifest.encoder.file`` names only the primary)."""
    decoder_weights: DecoderWeights = "fp32"
    """``int8`` when the decoding graphs run the engine's int8 rewrite (``SessionOptions.decoder_weights``
    resolved); ``fp32`` otherwise, also where the graphs had no fp32 products to rewrite."""
    joint_fallback: ort.InferenceSession | None = None
    """The joint's fp32 graph with argmax heads, for the rows whose choices the step graph or the joint leave
    unproven (:data:`.devices.ARGMAX_PROVEN`); ``None`` where neither proves its choices."""
    proven_outputs: tuple[bool, bool] = (False, False)
    """Whether the step graph (or predictor) and the joint have the :data:`.devices.ARGMAX_PROVEN` output."""
    _start: tuple[FloatArray, FloatArray, FloatArray] = field(init=False, repr=False)
    """Predictor output, ``h`` and ``c`` after the start-of-sequence input, computed once (read-only)."""

    def __post_init__(self) -> None:
        manifest = self.manifest
        graph = (manifest.step or manifest.predictor).file
        zero_frame = np.zeros((1, manifest.encoder.joint_hidden), dtype=np.float32)
        state = self.initial_state()
        try:
            output, h, c, step_logits = self._run_predictor(
                np.array([manifest.decoding.blank_id], dtype=np.int64), state[0], state[1], zero_frame)
        except Exception as exc:  # onnxruntime raises its own untyped exceptions here
            raise ManifestError(f"{graph}: the predictor does not run on its manifest's inputs ({exc})") from exc
        try:
            joint_logits = self.joint_rows(zero_frame, output)
        except Exception as exc:  # onnxruntime raises its own untyped exceptions here
            raise ManifestError(f"{manifest.joint.file}: the joint does not run on its manifest's inputs "
                                f"({exc})") from exc
        if self.argmax:
            self._check_choices(output)
        for file, logits in ((graph, step_logits), (manifest.joint.file, joint_logits)):
            if isinstance(logits, JointChoices):  # checked above
                continue
            _check_joint_width(manifest, file, logits.shape[-1])  # labels and durations: the search reads them
        start = (output, h, c)
        for array in start:
            array.setflags(write=False)
        object.__setattr__(self, "_start", start)

    def _check_choices(self, predictor_output: FloatArray) -> None:
        """Graphs that return the joint's choices: one choice per row (two rows here) and the joint's width as the
        manifest says (:data:`.devices.ARGMAX_WIDTH`: the logits' columns the choices were made from).

        Raises:
            ManifestError: either differs.
        """
        manifest = self.manifest
        frames = np.zeros((2, manifest.encoder.joint_hidden), dtype=np.float32)
        runs = [(manifest.joint.file, self.joint_session, {
            manifest.joint.input_encoder: frames,
            manifest.joint.input_predictor: np.repeat(predictor_output, 2, axis=0)})]
        if manifest.step is not None:
            spec = manifest.predictor
            h, c = self.initial_state()
            runs.append((manifest.step.file, self.predictor_session, {
                spec.input_targets: np.array([manifest.decoding.blank_id], dtype=np.int64), spec.input_h: h,
                spec.input_c: c, manifest.step.input_encoder: frames}))
        for file, session, feeds in runs:
            try:
                label, width = session.run([ARGMAX_LABEL, ARGMAX_WIDTH], feeds)
            except Exception as exc:  # onnxruntime raises its own untyped exceptions here
                raise ManifestError(f"{file}: the joint's choices do not run on its manifest's inputs ({exc})") from exc
            if label.shape != (2,):
                raise ManifestError(f"{file}: the joint's choices are not one per row (2 rows gave {label.shape})")
            _check_joint_width(manifest, file, int(width.reshape(-1)[0]))

    def rows_decode_alike(self, step_rows: Sequence[int] = STEP_ROWS_CHECKED,
                          joint_rows: Sequence[int] = JOINT_ROWS_CHECKED) -> bool:
        """Whether a decoding step gives each row of a batch exactly what it gives that row alone, checked on this
        machine: seeded random labels, states and frames through the step graph (or predictor and joint) one row at
        a time, then ``step_rows`` rows at once, and the joint alone on ``joint_rows`` rows at once (the batched
        search runs it on up to a batch's rows times its lookahead), every output compared bit for bit.

        A batched search (:func:`~parakeet_runtime.decoding.tdt_greedy_decode_batch`) gives the same transcripts
        as decoding each input alone only where this holds. The int8 rewrite's products are made so that it can
        (blockwise quantised activations, a ranking quantised row by row), but whether a kernel sums a row in the
        same order at every batch size is the CPU's and ONNX Runtime's to say: hence a check, not a promise (a
        graph that ends in the joint's choices shows its joint through them only)."""
        manifest, spec = self.manifest, self.manifest.predictor
        steps, joints = max(step_rows), max(joint_rows)
        random = np.random.default_rng(0)
        labels = random.integers(0, manifest.decoding.blank_id, size=steps, dtype=np.int64)
        h = (random.standard_normal((spec.layers, steps, spec.hidden)) * 0.5).astype(np.float32)
        c = (random.standard_normal((spec.layers, steps, spec.hidden)) * 0.5).astype(np.float32)
        frames = random.standard_normal((joints, manifest.encoder.joint_hidden)).astype(np.float32)
        one = np.arange(1)
        alone = [self.predict_joint_rows(labels[r : r + 1], (h[:, r : r + 1], c[:, r : r + 1]), one, frames[r : r + 1])
                 for r in range(steps)]
        outputs = np.concatenate([output for output, _, _ in alone])
        states = [np.concatenate([state[i] for _, state, _ in alone], axis=1) for i in (0, 1)]
        step_choices = [np.concatenate(parts) for parts in zip(*(_joint_arrays(j) for _, _, j in alone), strict=True)]
        for rows in step_rows:
            output, (new_h, new_c), joint = self.predict_joint_rows(labels[:rows], (h[:, :rows], c[:, :rows]),
                                                                    np.arange(rows), frames[:rows])
            if not (np.array_equal(output, outputs[:rows]) and np.array_equal(new_h, states[0][:, :rows])
                    and np.array_equal(new_c, states[1][:, :rows])
                    and all(np.array_equal(a, b[:rows]) for a, b in zip(_joint_arrays(joint), step_choices,
                                                                          strict=True))):
                return False
        paired = outputs[np.arange(joints) % steps]  # each frame with one of the predictor outputs above
        single = [_joint_arrays(self.joint_rows(frames[r : r + 1], paired[r : r + 1])) for r in range(joints)]
        joint_choices = [np.concatenate(parts) for parts in zip(*single, strict=True)]
        for rows in joint_rows:
            together = _joint_arrays(self.joint_rows(frames[:rows], paired[:rows]))
            if not all(np.array_equal(a, b[:rows]) for a, b in zip(together, joint_choices, strict=True)):
                return False
        return True

    @classmethod
    def load(
        cls, manifest: Manifest, model_dir: Path, *, providers: Sequence[Provider] | None, session: SessionOptions,
        argmax: bool | None = False,
    ) -> OnnxTdtModel:
        """The graphs of a model directory of this project's layout.

        Args:
            argmax: the step graph and the joint return their argmaxes instead of logits (:func:`choice_graph`),
                so that a step on a GPU copies two integers per row back, and a step with int8 decoding weights
                never assembles the joint's full-width logits; the search gets
                :class:`~parakeet_runtime.decoding.JointChoices`, with the same tokens, durations and frames and
                no confidence. ``None``: where the decoding weights are int8, or fp32 with a joint for which
                :func:`proven_ranking_pays` (the fp32 joint's labels then ranked in int8 with a proof).

        Raises:
            ManifestError: a graph without the inputs and outputs its manifest section names, or that does not run.
        """
        chosen = list(providers) if providers is not None else default_providers()
        logger.info("loading ONNX graphs from %s with providers %s", model_dir, chosen)
        predictor_file = manifest.step.file if manifest.step else manifest.predictor.file
        spec = manifest.joint
        weights = chosen_decoder_weights(session, chosen, manifest.encoder.precision)
        ranked = weights == "fp32" and proven_ranking_pays(manifest, chosen)
        if argmax is None:
            argmax = weights == "int8" or ranked
        logits_outputs = (manifest.step.output_logits if manifest.step else None, spec.output_logits)
        decoding = decoding_sessions((model_dir / predictor_file, predictor_file),
                                     (model_dir / spec.file, spec.file), joint_columns(manifest),
                                     chosen, session, manifest.encoder.precision,
                                     argmax_of=logits_outputs if argmax else None, weights=weights,
                                     proven=argmax and ranked)
        # The encoder after the decoding graphs: the buffers their rewrites at load free are then reused for its
        # weights instead of adding to the load's peak.
        encoder, encoder_file = encoder_session(manifest, model_dir, chosen, session)
        _check_names(decoding.joint, spec.file, "joint", (spec.input_encoder, spec.input_predictor),
                     (ARGMAX_LABEL, ARGMAX_DURATION) if argmax else (spec.output_logits,))
        model = cls(
            manifest=manifest,
            encoder_session=encoder,
            encoder_file=encoder_file,
            predictor_session=decoding.predictor,
            joint_session=decoding.joint,
            release_above_frames=release_above_frames(manifest, session.release_memory_above_seconds),
            decoder_weights=decoding.weights,
            argmax=decoding.argmax,
            joint_fallback=decoding.fallback,
            proven_outputs=decoding.proven,
        )
        if any(provider_name(p) == "TensorrtExecutionProvider" for p in chosen):
            # TensorRT builds an engine for the shapes it first sees and rebuilds for wider ones: a short run
            # here would cost a second build at the first request.
            logger.info("%s: encoder not test-run at load (TensorRT)", encoder_file)
        else:
            check_encoder(model, encoder_file)
        return model

    def encode(self, features: FloatArray, lengths: npt.NDArray[np.int64]) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """Run the encoder.

        Args:
            features: ``(batch, n_mels, frames)`` float32.
            lengths: ``(batch,)`` int64 valid feature frames.

        Returns:
            Projected encoder frames ``(batch, encoded_frames, joint_hidden)`` and their valid counts.
        """
        run_options = None
        if self.release_above_frames is not None and features.shape[0] * features.shape[2] > self.release_above_frames:
            run_options = _RELEASE_ARENA
        return self._encode(features, lengths, run_options)

    def _encode(
        self, features: FloatArray, lengths: npt.NDArray[np.int64], run_options: Any = None
    ) -> tuple[FloatArray, npt.NDArray[np.int64]]:
        """:meth:`encode` with the run options given (the check at load runs the encoder through here)."""
        spec = self.manifest.encoder
        frames, encoded_lengths = self.encoder_session.run(
            [spec.output_frames, spec.output_lengths],
            {spec.input_features: features, spec.input_lengths: lengths},
            run_options,
        )
        projection = self.encoder_projection
        if projection is not None:
            (frames,) = projection.session.run([projection.output], {projection.input: frames})
        return frames, encoded_lengths.astype(np.int64, copy=False)

    def _run_predictor(
        self, labels: npt.NDArray[np.int64], h: FloatArray, c: FloatArray, encoder_frames: FloatArray
    ) -> tuple[FloatArray, FloatArray, FloatArray, JointOutput]:
        """One predictor step for ``len(labels)`` rows and the joint of ``encoder_frames`` with the new
        outputs (row by row; a single row's output goes with every frame): one run of the step graph, or
        a predictor run and a joint run."""
        spec = self.manifest.predictor
        feeds: dict[str, Any] = {spec.input_targets: labels, spec.input_h: h, spec.input_c: c}
        step = self.manifest.step
        if step is None:
            output, new_h, new_c = self.predictor_session.run([spec.output, spec.output_h, spec.output_c], feeds)
            rows = np.broadcast_to(output, (encoder_frames.shape[0], output.shape[-1]))
            return output, new_h, new_c, self.joint_rows(encoder_frames, rows)
        frames = feeds[step.input_encoder] = np.ascontiguousarray(encoder_frames)
        if self.argmax:
            names = [spec.output, spec.output_h, spec.output_c, ARGMAX_LABEL, ARGMAX_DURATION]
            if self.proven_outputs[0]:
                output, new_h, new_c, label, duration, proven = self.predictor_session.run([*names, ARGMAX_PROVEN],
                                                                                          feeds)
                label, duration = self._unproven_again(label, duration, proven, frames, output)
            else:
                output, new_h, new_c, label, duration = self.predictor_session.run(names, feeds)
            return output, new_h, new_c, JointChoices(label, duration)
        output, new_h, new_c, logits = self.predictor_session.run(
            [spec.output, spec.output_h, spec.output_c, step.output_logits], feeds
        )
        return output, new_h, new_c, logits

    def _unproven_again(
        self, label: npt.NDArray[np.int64], duration: npt.NDArray[np.int64], proven: npt.NDArray[np.bool_],
        frames: FloatArray, predictor_outputs: FloatArray,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """The choices with the rows ``proven`` leaves out made again by the fp32 joint (``frames`` and their
        predictor outputs: one per frame, or one for all)."""
        if bool(proven.all()):
            return label, duration
        assert self.joint_fallback is not None
        rows = np.flatnonzero(~proven)
        spec = self.manifest.joint
        outputs = np.broadcast_to(predictor_outputs, (frames.shape[0], predictor_outputs.shape[-1]))
        again_label, again_duration = self.joint_fallback.run([ARGMAX_LABEL, ARGMAX_DURATION], {
            spec.input_encoder: np.ascontiguousarray(frames[rows]),
            spec.input_predictor: np.ascontiguousarray(outputs[rows])})
        label, duration = label.copy(), duration.copy()
        label[rows] = again_label
        duration[rows] = again_duration
        return label, duration

    # --- decoding.StepModel[LstmState] ---------------------------------------------------------

    def initial_state(self) -> LstmState:
        spec = self.manifest.predictor
        zeros = np.zeros((spec.layers, 1, spec.hidden), dtype=np.float32)
        return zeros, zeros

    def start(self) -> tuple[FloatArray, LstmState]:
        """The start-of-sequence step computed once at load (read-only arrays: the search never writes)."""
        output, h, c = self._start
        return output[0], (h, c)

    def predict(self, label: int, state: LstmState) -> tuple[FloatArray, LstmState]:
        """A prediction alone (the start of a search from a given state, the start-of-sequence step at
        load): the joint of a zero frame comes with it and is dropped."""
        zero_frame = np.zeros((1, self.manifest.encoder.joint_hidden), dtype=np.float32)
        output, h, c, _ = self._run_predictor(np.array([label], dtype=np.int64), state[0], state[1], zero_frame)
        return output[0], (h, c)

    def joint_frames(self, encoder_frames: FloatArray, predictor_output: FloatArray) -> JointOutput:
        rows = np.broadcast_to(predictor_output, (encoder_frames.shape[0], predictor_output.shape[-1]))
        return self.joint_rows(encoder_frames, rows)

    def predict_joint(
        self, label: int, state: LstmState, encoder_frames: FloatArray
    ) -> tuple[FloatArray, LstmState, JointOutput]:
        labels = np.array([label], dtype=np.int64)
        output, h, c, logits = self._run_predictor(labels, state[0], state[1], encoder_frames)
        return output[0], (h, c), logits

    # --- decoding.BatchStepModel[LstmState] ----------------------------------------------------

    def start_rows(self, batch_size: int) -> tuple[FloatArray, LstmState]:
        """Outputs and state after the start-of-sequence input (NeMo: the blank id fed to a zero state),
        for ``batch_size`` fresh rows: copies of the values computed once at load."""
        output, h, c = self._start
        state = (np.repeat(h, batch_size, axis=1), np.repeat(c, batch_size, axis=1))
        return np.repeat(output, batch_size, axis=0), state

    def predict_joint_rows(
        self, labels: npt.NDArray[np.int64], state: LstmState, rows: npt.NDArray[np.int64], encoder_frames: FloatArray
    ) -> tuple[FloatArray, LstmState, JointOutput]:
        full = rows.shape[0] == state[0].shape[1] and bool(np.all(rows == np.arange(rows.shape[0])))
        h_rows, c_rows = (state[0], state[1]) if full else (state[0][:, rows], state[1][:, rows])
        output, h, c, logits = self._run_predictor(
            np.ascontiguousarray(labels, dtype=np.int64), np.ascontiguousarray(h_rows), np.ascontiguousarray(c_rows),
            encoder_frames,
        )
        if full:
            return output, (h, c), logits
        new_h, new_c = state[0].copy(), state[1].copy()
        new_h[:, rows] = h
        new_c[:, rows] = c
        return output, (new_h, new_c), logits

    def joint_rows(self, encoder_frames: FloatArray, predictor_outputs: FloatArray) -> JointOutput:
        spec = self.manifest.joint
        feeds = {spec.input_encoder: np.ascontiguousarray(encoder_frames),
                 spec.input_predictor: np.ascontiguousarray(predictor_outputs)}
        if self.argmax:
            if self.proven_outputs[1]:
                label, duration, proven = self.joint_session.run([ARGMAX_LABEL, ARGMAX_DURATION, ARGMAX_PROVEN], feeds)
                label, duration = self._unproven_again(label, duration, proven, feeds[spec.input_encoder],
                                                       feeds[spec.input_predictor])
            else:
                label, duration = self.joint_session.run([ARGMAX_LABEL, ARGMAX_DURATION], feeds)
            return JointChoices(label, duration)
        (logits,) = self.joint_session.run([spec.output_logits], feeds)
        result: FloatArray = logits
        return result
