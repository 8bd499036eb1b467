"""Hostile model directories: files outside the directory, mistyped and out-of-range manifest fields, forged
``.npz`` headers, tampered files. Every one is a typed error at load, never a raw exception at a request."""

from __future__ import annotations

import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parakeet_runtime.engine import (
    BatchingOptions,
    Engine,
    ManifestError,
    ModelDirectoryError,
    SessionOptions,
    default_model_dir,
    load_manifest,
)
from parakeet_runtime.engine.model.manifest import FileDigest, file_sha256, parse_manifest

Raw = dict[str, Any]


def _copy(tmp_path: Path, edit: Callable[[Raw], object] | None = None, *, keep_digests: bool = False) -> Path:
    """A copy of the demo model; ``edit`` changes its manifest (whose file records are dropped unless kept,
    so that an edited file is judged on its content, not on its size)."""
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    raw = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
    if not keep_digests:
        raw.pop("files", None)
    if edit is not None:
        edit(raw)
    (model / "manifest.json").write_text(json.dumps(raw), encoding="utf-8")
    return model


def _load(model: Path, **kwargs: Any) -> None:
    with Engine.load(model, batching=BatchingOptions(enabled=False), **kwargs):
        pass


# --- A. confinement -------------------------------------------------------------------------------------


def _outside(tmp_path: Path, name: str) -> Path:
    """A real copy of a demo model file outside the model directory (what a hostile manifest points at)."""
    target = tmp_path / "elsewhere" / name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(default_model_dir() / name, target)
    return target


def test_a_parent_path_is_refused(tmp_path: Path) -> None:
    _outside(tmp_path, "encoder.onnx")
    model = _copy(tmp_path, lambda m: m["encoder"].update(file="../elsewhere/encoder.onnx"))
    with pytest.raises(ManifestError, match=r"encoder\.file must be a path inside the model directory"):
        _load(model)


def test_an_absolute_path_is_refused(tmp_path: Path) -> None:
    outside = _outside(tmp_path, "encoder.onnx")
    model = _copy(tmp_path, lambda m: m["encoder"].update(file=str(outside)))
    with pytest.raises(ManifestError, match=r"encoder\.file must be a path inside"):
        _load(model)


def test_the_vocabulary_cannot_be_any_file_of_the_machine(tmp_path: Path) -> None:
    model = _copy(tmp_path, lambda m: m["tokenizer"].update(vocab_file="/etc/passwd"))
    with pytest.raises(ManifestError, match=r"tokenizer\.vocab_file must be a path inside"):
        load_manifest(model)


@pytest.mark.parametrize("name", ["encoder.onnx", "vocab.txt", "features.npz", "predictor.onnx"])
def test_a_symbolic_link_leaving_the_directory_is_refused(tmp_path: Path, name: str) -> None:
    outside = _outside(tmp_path, name)
    model = _copy(tmp_path)
    (model / name).unlink()
    (model / name).symlink_to(outside)
    with pytest.raises(ManifestError, match="leaves the model directory"):
        _load(model)


def test_a_symbolic_link_inside_the_directory_is_allowed(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    (model / "weights").mkdir()
    (model / "encoder.onnx").rename(model / "weights" / "encoder.onnx")
    (model / "encoder.onnx").symlink_to(Path("weights") / "encoder.onnx")
    _load(model)


def test_a_directory_instead_of_a_file_is_refused(tmp_path: Path) -> None:
    model = _copy(tmp_path, lambda m: m["joint"].update(file="graphs"))
    (model / "graphs").mkdir()
    with pytest.raises(ManifestError, match=r"joint\.file 'graphs' is not a plain file"):
        _load(model)


def test_the_directory_itself_is_not_a_file(tmp_path: Path) -> None:
    model = _copy(tmp_path, lambda m: m["encoder"].update(file="."))
    with pytest.raises(ManifestError, match=r"encoder\.file '\.' is not a plain file"):
        _load(model)


@pytest.mark.parametrize("external", ["../elsewhere/encoder.onnx.data", "/etc/passwd", "link.data"])
def test_external_data_is_confined_too(tmp_path: Path, external: str) -> None:
    outside = _outside(tmp_path, "vocab.txt").with_name("encoder.onnx.data")
    outside.write_bytes(b"\x00" * 16)
    model = _copy(tmp_path, lambda m: m["encoder"].update(external_data=external))
    (model / "link.data").symlink_to(outside)
    with pytest.raises(ManifestError, match=r"encoder\.external_data"):
        _load(model)


def test_a_missing_file_is_still_a_model_directory_error(tmp_path: Path) -> None:
    model = _copy(tmp_path, lambda m: m["tokenizer"].update(vocab_file="sub/vocab.txt"))
    with pytest.raises(ModelDirectoryError, match=r"sub/vocab\.txt"):
        _load(model)


# --- B. the manifest validated completely ---------------------------------------------------------------

BAD_FIELDS: list[tuple[str, Callable[[Raw], object], str]] = [
    ("subsampling zero", lambda m: m["encoder"].update(subsampling_factor=0), r"encoder\.subsampling_factor"),
    ("string rate", lambda m: m["features"].update(sample_rate="16000"), r"features\.sample_rate must be an integer"),
    ("float rate", lambda m: m["features"].update(sample_rate=16000.5), r"features\.sample_rate"),
    ("bool schema", lambda m: m.update(schema_version=True), "schema version True"),
    ("negative max_frames", lambda m: m["encoder"].update(max_frames=-1), r"encoder\.max_frames"),
    ("NaN guard", lambda m: m["features"].update(log_zero_guard_value=float("nan")), "log_zero_guard_value"),
    ("infinite pad", lambda m: m["features"].update(pad_value=float("inf")), r"features\.pad_value"),
    ("zero stride", lambda m: m["features"].update(window_stride=0.0), r"features\.window_stride must be positive"),
    ("window over n_fft", lambda m: m["features"].update(win_length=1024), "win_length"),
    ("bool size", lambda m: m["features"].update(n_mels=True), r"features\.n_mels must be an integer"),
    ("huge n_fft", lambda m: m["features"].update(n_fft=1 << 40), r"features\.n_fft"),
    ("negative duration", lambda m: m["decoding"].update(durations=[-1, 0, 1, 2, 3]), r"decoding\.durations"),
    ("float duration", lambda m: m["decoding"].update(durations=[0, 1.5, 2, 3, 4]), r"decoding\.durations"),
    ("no durations", lambda m: m["decoding"].update(durations=[]), r"decoding\.durations"),
    ("no positive duration", lambda m: m["decoding"].update(durations=[0, 0, 0, 0, 0]),
     r"decoding\.durations.*positive"),
    ("zero max_symbols", lambda m: m["decoding"].update(max_symbols=0), r"decoding\.max_symbols"),
    ("huge layers", lambda m: m["predictor"].update(layers=10**9), r"predictor\.layers"),
    ("empty input name", lambda m: m["encoder"].update(input_features=""), r"encoder\.input_features"),
    ("number as file", lambda m: m["joint"].update(file=7), r"joint\.file must be a string"),
    ("list as int", lambda m: m["joint"].update(num_outputs=[390]), r"joint\.num_outputs"),
    ("bad precision", lambda m: m["encoder"].update(precision="fp8"), r"encoder\.precision"),
    ("unknown field", lambda m: m["encoder"].update(dropout=0.1), "unknown fields"),
    ("missing field", lambda m: m["predictor"].pop("hidden"), "hidden"),
    ("unknown section", lambda m: m.update(extra={}), "unknown fields"),
    ("section not object", lambda m: m.update(decoding=[1, 2]), "'decoding'"),
    ("name not string", lambda m: m.update(model_name=3), "model_name must be a string"),
    ("gap threshold", lambda m: m["tokenizer"].update(segment_gap_threshold=-5), "segment_gap_threshold"),
    # Found by probing broken directories: each loaded, then transcribed wrongly without an error.
    ("empty punctuation", lambda m: m["tokenizer"].update(supported_punctuation=[""]),  # joined words unspaced
     r"tokenizer\.supported_punctuation must be a list of non-empty strings"),
    ("empty separator", lambda m: m["tokenizer"].update(segment_separators=[".", ""]), "segment_separators"),
    ("pad over float32", lambda m: m["features"].update(pad_value=1e39), r"features\.pad_value"),  # ⁇ transcripts
    ("guard under float32", lambda m: m["features"].update(log_zero_guard_value=1e-50), "log_zero_guard_value"),
    ("huge power", lambda m: m["features"].update(mag_power=1e308), r"features\.mag_power"),
    # Found by an adversarial probe (2026-12-05): a null max_symbols loaded and a model emitting duration 0 at one
    # frame then decoded forever, blocking the batcher's worker and every other request; a hop length or window
    # stride edited alone loaded, then failed in ONNX Runtime untyped or timed every word twice as late.
    ("null max_symbols", lambda m: m["decoding"].update(max_symbols=None), r"decoding\.max_symbols must be a number"),
    ("hop length alone", lambda m: m["features"].update(hop_length=1), r"features\.hop_length \(1 samples\)"),
    ("window stride alone", lambda m: m["features"].update(window_stride=0.02), "window_stride .* disagree"),
    ("unknown tokenizer", lambda m: m["tokenizer"].update(kind="x"), r"tokenizer\.kind must be one of 'bpe', 'wpe'"),
]


@pytest.mark.parametrize(("edit", "message"), [(e, m) for _, e, m in BAD_FIELDS], ids=[i for i, _, _ in BAD_FIELDS])
def test_a_bad_field_is_a_manifest_error_naming_it(tmp_path: Path, edit: Callable[[Raw], object], message: str) -> None:
    model = _copy(tmp_path, edit)
    with pytest.raises(ManifestError, match=message):
        _load(model)


def _write_npz(path: Path, arrays: dict[str, bytes]) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        for key, data in arrays.items():
            archive.writestr(f"{key}.npy", data)


def _npy(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def _forged_npy(shape: tuple[int, ...]) -> bytes:
    """An ``.npy`` header declaring ``shape`` followed by a few bytes of data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": shape})
    return buffer.getvalue() + b"\x00" * 64


def _demo_arrays() -> dict[str, np.ndarray]:
    with np.load(default_model_dir() / "features.npz") as arrays:
        return {key: arrays[key] for key in ("window", "filterbank")}


def test_a_huge_declared_shape_is_refused_without_allocating(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    arrays = _demo_arrays()
    forged = _forged_npy((1 << 40, 1 << 30))
    _write_npz(model / "features.npz", {"window": _npy(arrays["window"]), "filterbank": forged})
    started = time.monotonic()
    with pytest.raises(ManifestError, match=r"filterbank has shape \(1099511627776, 1073741824\)"):
        _load(model)
    assert time.monotonic() - started < 5.0


def test_an_array_shorter_than_its_header_is_refused(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    arrays = _demo_arrays()
    _write_npz(model / "features.npz",
               {"window": _forged_npy(arrays["window"].shape), "filterbank": _npy(arrays["filterbank"])})
    with pytest.raises(ManifestError, match="header announces"):
        _load(model)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_filterbanks_are_refused(tmp_path: Path, bad: float) -> None:
    model = _copy(tmp_path)
    arrays = _demo_arrays()
    filterbank = arrays["filterbank"].copy()
    filterbank[3, 5] = bad
    _write_npz(model / "features.npz", {"window": _npy(arrays["window"]), "filterbank": _npy(filterbank)})
    with pytest.raises(ManifestError, match="filterbank contains NaN or infinite"):
        _load(model)


def test_object_arrays_are_refused_unread(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    arrays = _demo_arrays()
    buffer = io.BytesIO()
    np.save(buffer, np.array([object()] * 400, dtype=object), allow_pickle=True)
    _write_npz(model / "features.npz", {"window": buffer.getvalue(), "filterbank": _npy(arrays["filterbank"])})
    with pytest.raises(ManifestError, match="window has dtype object"):
        _load(model)


def test_a_vocabulary_that_is_not_text_is_a_manifest_error(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    (model / "vocab.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ManifestError, match=r"vocab\.txt"):
        _load(model)


class _StubEncoder:
    """What :func:`check_encoder` reads of a model: the manifest, and an encoder of chosen output lengths."""

    def __init__(self, lengths: Callable[[np.ndarray], np.ndarray]) -> None:
        self.manifest = load_manifest(default_model_dir())
        self._lengths = lengths

    def _encode(self, features: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        encoded = self._lengths(lengths)
        return np.zeros((len(lengths), int(encoded.max()), self.manifest.encoder.joint_hidden), np.float32), encoded


def test_the_encoder_check_measures_the_factor_by_difference() -> None:
    """A subsampling that adds a frame to every length (causal padding: 8k feature frames give k + 1) is the
    manifest's factor; one that subsamples by half of it is not."""
    from typing import cast

    from parakeet_runtime.engine.model.onnx_model import OnnxTdtModel, check_encoder

    factor = load_manifest(default_model_dir()).encoder.subsampling_factor
    check_encoder(cast(OnnxTdtModel, _StubEncoder(lambda n: -(-n // factor))), "encoder.onnx")
    check_encoder(cast(OnnxTdtModel, _StubEncoder(lambda n: n // factor + 1)), "encoder.onnx")
    with pytest.raises(ManifestError, match=rf"the encoder subsamples by {factor // 2}, but"):
        check_encoder(cast(OnnxTdtModel, _StubEncoder(lambda n: n // (factor // 2))), "encoder.onnx")
    with pytest.raises(ManifestError, match="does not subsample evenly"):
        check_encoder(cast(OnnxTdtModel, _StubEncoder(lambda n: n // factor + (n > 4 * factor) * 3)), "encoder.onnx")


def test_a_directory_that_lost_its_manifest_is_named_as_this_projects(tmp_path: Path) -> None:
    """It was said to hold vocab.txt "of onnx-asr's layout" (and a FIFO as manifest.json: "no manifest.json")."""
    model = _copy(tmp_path)
    (model / "manifest.json").unlink()
    with pytest.raises(ModelDirectoryError, match=r"no manifest\.json; it holds features\.npz, tokenizer\.model, "
                                                  r"predictor\.onnx, joint\.onnx of this project's layout.*restore it"):
        _load(model)
    if hasattr(os, "mkfifo"):
        os.mkfifo(model / "manifest.json")
        with pytest.raises(ModelDirectoryError, match=r"its manifest\.json is not a regular file"):
            _load(model)


def test_graph_names_are_checked_at_load(tmp_path: Path) -> None:
    model = _copy(tmp_path, lambda m: m["encoder"].update(output_frames="nothing"))
    with pytest.raises(ManifestError, match=r"encoder\.onnx: the graph has no output 'nothing'"):
        _load(model)


def test_an_oversized_or_deeply_nested_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    model = _copy(tmp_path)
    (model / "manifest.json").write_text("[" * 200_000 + "]" * 200_000, encoding="utf-8")
    with pytest.raises(ManifestError, match="cannot be read as a JSON manifest"):
        _load(model)


def test_an_integer_of_too_many_digits_in_the_manifest_is_a_manifest_error(tmp_path: Path) -> None:
    """Python refuses to read an integer of over 4,300 digits with a bare ValueError that named no file."""
    model = _copy(tmp_path)
    text = (model / "manifest.json").read_text(encoding="utf-8")
    (model / "manifest.json").write_text(text.replace('"max_symbols": 10', '"max_symbols": 1' + "0" * 5000),
                                         encoding="utf-8")
    with pytest.raises(ManifestError, match=r"manifest\.json: cannot be read as a JSON manifest"):
        _load(model)


def test_a_joint_wider_than_the_manifest_says_is_refused_at_load(tmp_path: Path) -> None:
    """Four durations and a joint width that agree with each other, but not with the graphs' five: it loaded, and
    every request then failed with a bare ValueError from the search."""
    def four_durations(raw: Raw) -> None:
        raw["decoding"]["durations"] = raw["decoding"]["durations"][:4]
        raw["joint"]["num_outputs"] -= 1

    model = _copy(tmp_path, four_durations)
    # The argmax heads give the width they were taken over, checked as well; int8 decoding weights too.
    for options in ({"argmax_step": False}, {"argmax_step": True}, {"session": SessionOptions(decoder_weights="int8")}):
        with pytest.raises(ManifestError, match=r"the joint gives \d+ logits, but the manifest says \d+"):
            _load(model, **options)


def _fewer_mels(raw: Raw, model: Path) -> None:
    """The manifest and the filterbank say 64 bins (so the features load), the encoder still takes the demo's."""
    with np.load(default_model_dir() / "features.npz") as arrays:
        saved = {name: arrays[name] for name in arrays.files}
    saved["filterbank"] = saved["filterbank"][:64]
    np.savez(model / "features.npz", **saved)
    raw["features"]["n_mels"] = 64


@pytest.mark.parametrize(("edit", "message"), [
    (lambda raw, model: raw["encoder"].update(subsampling_factor=raw["encoder"]["subsampling_factor"] // 2),
     r"\d+ more feature frames encode to \d+ more frames: the encoder subsamples by 8, but the manifest's "
     r"encoder\.subsampling_factor is 4"),
    (lambda raw, model: raw["encoder"].update(subsampling_factor=raw["encoder"]["subsampling_factor"] * 2),
     r"the encoder subsamples by 8, but the manifest's encoder\.subsampling_factor is 16"),
    (lambda raw, model: raw["encoder"].update(output_lengths=raw["encoder"]["output_frames"]),
     r"encoder\.onnx: the encoder's output 'encoder_projected' \(manifest encoder\.output_lengths\) has shape "
     r"\(2, \d+, \d+\) for 2 inputs, not one length per input"),
    (lambda raw, model: raw["encoder"].update(output_frames=raw["encoder"]["output_lengths"]),
     r"manifest encoder\.output_frames\) has shape \(2,\), not \(batch, frames, \d+\)"),
    (_fewer_mels, r"encoder\.onnx: the encoder does not run on its manifest's features \(64 mel bins"),
], ids=["factor halved", "factor doubled", "lengths are the frames", "frames are the lengths", "fewer mel bins"])
def test_an_encoder_that_disagrees_with_its_manifest_is_refused_at_load(
    tmp_path: Path, edit: Callable[[Raw, Path], object], message: str
) -> None:
    """Each loaded before, then failed every request with a bare ONNX Runtime error or TypeError; a wrong
    subsampling factor gave transcripts whose times were all scaled, with no error at all."""
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    raw = json.loads((model / "manifest.json").read_text(encoding="utf-8"))
    raw.pop("files", None)
    edit(raw, model)
    (model / "manifest.json").write_text(json.dumps(raw), encoding="utf-8")
    assert raw["encoder"]["subsampling_factor"] in (4, 8, 16)
    with pytest.raises(ManifestError, match=message):
        _load(model)


HOSTILE_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, -1, 1, 2, 1 << 31, 1 << 62]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.sampled_from(["../x", "/etc/passwd", "", ".", "manifest.json", "encoder.onnx", "vocab.txt", "a\x00b"]),
    st.lists(st.integers(min_value=-3, max_value=5), max_size=5),
    st.lists(st.text(max_size=2), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


def _demo_raw() -> Raw:
    raw: Raw = json.loads((default_model_dir() / "manifest.json").read_text(encoding="utf-8"))
    return raw


def _paths(raw: Raw) -> list[tuple[str, ...]]:
    """Every field of the manifest that is not provenance (which has its own tests), as a key path."""
    paths: list[tuple[str, ...]] = []
    for key, value in raw.items():
        if key == "provenance":
            continue
        paths.append((key,))
        if isinstance(value, dict):
            paths.extend((key, inner) for inner in value)
    return paths


OUTCOMES: Counter[str] = Counter()


@pytest.fixture(scope="module")
def scratch_model() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="hostile-") as scratch:
        model = Path(scratch) / "model"
        shutil.copytree(default_model_dir(), model)
        yield model


@settings(max_examples=200, deadline=10_000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    edits=st.lists(
        st.tuples(st.sampled_from(_paths(_demo_raw())), st.one_of(st.just("delete"), HOSTILE_VALUES)),
        min_size=1, max_size=3,
    )
)
def test_mutated_manifests_raise_only_typed_errors(
    scratch_model: Path, edits: list[tuple[tuple[str, ...], Any]]
) -> None:
    raw = _demo_raw()
    for path, value in edits:
        parent = raw
        for key in path[:-1]:
            parent = parent[key] if isinstance(parent.get(key), dict) else {}
        if value == "delete":
            parent.pop(path[-1], None)
        else:
            parent[path[-1]] = value
    (scratch_model / "manifest.json").write_text(json.dumps(raw), encoding="utf-8")
    try:
        _load(scratch_model)
    except (ManifestError, ModelDirectoryError) as exc:
        OUTCOMES[type(exc).__name__] += 1
    else:
        OUTCOMES["loaded"] += 1


def test_mutation_outcomes_were_counted() -> None:
    """Runs after the property test (file order): the mutations were mostly refused, and counted."""
    print(f"\nmutated manifests: {dict(OUTCOMES)}")
    assert OUTCOMES["ManifestError"] > 50, OUTCOMES


# --- C. integrity ---------------------------------------------------------------------------------------


def test_the_demo_manifest_records_every_file_it_names() -> None:
    manifest = load_manifest(default_model_dir(), verify=True)
    assert {d.name for d in manifest.digests} == set(manifest.files())
    for digest in manifest.digests:
        path = default_model_dir() / digest.name
        assert digest == FileDigest(digest.name, file_sha256(path), path.stat().st_size)
    assert parse_manifest(json.loads(manifest.to_json())) == manifest


def _flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def test_a_tampered_weight_is_found_with_verify(tmp_path: Path) -> None:
    model = _copy(tmp_path, keep_digests=True)
    _flip_a_byte(model / "encoder.onnx")
    assert load_manifest(model).digests  # same size: only the hash can tell
    with pytest.raises(ManifestError, match=r"encoder\.onnx: SHA-256 differs"):
        _load(model, verify=True)


def test_a_changed_size_is_found_without_verify(tmp_path: Path) -> None:
    model = _copy(tmp_path, keep_digests=True)
    recorded = (model / "joint.onnx").stat().st_size
    with (model / "joint.onnx").open("ab") as stream:
        stream.write(b"\x00")
    with pytest.raises(ManifestError, match=rf"joint\.onnx: {recorded + 1} bytes, the manifest records {recorded}:"):
        _load(model)


def test_a_record_of_a_file_no_longer_named_is_dropped(tmp_path: Path) -> None:
    """A directory whose manifest stopped naming a file (the step graph removed, say) still loads."""
    model = _copy(tmp_path, lambda m: m["files"].update({"step.onnx": {"sha256": "0" * 64, "bytes": 1}}),
                  keep_digests=True)
    manifest = load_manifest(model, verify=True)
    assert "step.onnx" not in {d.name for d in manifest.digests}
    assert {d.name for d in manifest.digests} == set(manifest.files())


def test_an_untouched_copy_verifies(tmp_path: Path) -> None:
    model = _copy(tmp_path, keep_digests=True)
    _load(model, verify=True)


@pytest.mark.parametrize(("files", "message"), [
    ({"vocab.txt": {"sha256": "XYZ", "bytes": 1}}, r"files\.vocab\.txt\.sha256"),
    ({"vocab.txt": {"sha256": "0" * 64, "bytes": True}}, r"files\.vocab\.txt\.bytes"),
    ({"vocab.txt": {"sha256": "0" * 64}}, r"files\.vocab\.txt must be"),
    (["vocab.txt"], "files must map"),
])
def test_bad_file_records_are_manifest_errors(tmp_path: Path, files: object, message: str) -> None:
    model = _copy(tmp_path, lambda m: m.update(files=files))
    with pytest.raises(ManifestError, match=message):
        load_manifest(model)


def test_converted_directories_record_their_files(converted: dict[str, Path]) -> None:
    for directory in converted.values():
        manifest = load_manifest(directory, verify=True)
        assert {d.name for d in manifest.digests} == set(manifest.files()), directory
        assert all(os.path.getsize(directory / d.name) == d.size for d in manifest.digests)


def test_a_quantised_conversion_records_the_quantised_files(tmp_path: Path, nemo_paths: dict[str, Path],
                                                            converted: dict[str, Path]) -> None:
    from parakeet_runtime.export.convert import convert

    out = tmp_path / "int8"
    report = convert(str(nemo_paths["tdt_a"]), out, quantize="int8", verify=False)
    manifest = load_manifest(out, verify=True)
    assert manifest.digests == report.manifest.digests
    assert {d.name for d in manifest.digests} == set(manifest.files())
    encoder = {d.name: d for d in manifest.digests}["encoder.onnx"]
    fp32 = {d.name: d for d in load_manifest(converted["tdt_a"]).digests}["encoder.onnx"]
    assert encoder.size == (out / "encoder.onnx").stat().st_size != fp32.size


class _StubSession:
    """An encoder session of NeMo's export names whose lengths come from ``lengths``."""

    def __init__(self, lengths: Callable[[np.ndarray], np.ndarray]) -> None:
        self._lengths = lengths

    def run(self, names: Any, feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        encoded = self._lengths(feed["length"])
        return [np.zeros((len(encoded), 32, int(encoded.max())), np.float32), encoded]


def test_other_layouts_measure_the_factor_by_difference_too() -> None:
    """onnx-asr's and sherpa-onnx's encoders are measured, not read from a manifest: a subsampling that adds a
    frame (causal padding) measured as 'cannot infer subsampling'."""
    from typing import cast

    import onnxruntime as ort

    from parakeet_runtime.engine.model.onnx_asr import measure_encoder

    def measured(lengths: Callable[[np.ndarray], np.ndarray]) -> tuple[int, int]:
        return measure_encoder(cast(ort.InferenceSession, _StubSession(lengths)), 80, "e.onnx")

    for factor in (4, 8, 16):
        assert measured(lambda n, f=factor: -(-n // f)) == (factor, 32)  # type: ignore[misc]
        assert measured(lambda n, f=factor: n // f + 1) == (factor, 32)  # type: ignore[misc]
    with pytest.raises(ManifestError, match="cannot infer subsampling"):
        measured(lambda n: n * 0 + 5)
