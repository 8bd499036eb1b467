"""The manifest's provenance, typed: parsed from and written to the keys of schema version 1, older directories
included; wrong types are ``ManifestError``s; a missing model directory says how to make one."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from parakeet_runtime.engine import Engine, ManifestError, ModelDirectoryError, default_model_dir, load_manifest
from parakeet_runtime.engine.model.manifest import (
    DecodingMethod,
    EncoderExport,
    ParityProbe,
    Provenance,
    Quantization,
    Versions,
    parse_manifest,
    parse_provenance,
)


def _raw() -> dict[str, Any]:
    raw: dict[str, Any] = json.loads((default_model_dir() / "manifest.json").read_text(encoding="utf-8"))
    return raw


def test_demo_manifest_provenance_is_typed() -> None:
    provenance = load_manifest(default_model_dir()).provenance
    raw = _raw()["provenance"]
    assert provenance.source == raw["source"] and provenance.source_sha256 == raw["source_sha256"]
    assert provenance.versions.parakeet_runtime == raw["versions"]["parakeet-runtime"]
    assert provenance.parity is not None and len(provenance.parity) == len(raw["parity"])
    assert all(isinstance(p, ParityProbe) and p.identical for p in provenance.parity)
    assert provenance.quantization is None
    # Shipped without position tables (they would take the directory past its 20 MB).
    assert provenance.encoder_export is not None and provenance.encoder_export.position_table_frames == 0
    assert provenance.encoder_export.fused_attention_layers == raw["encoder_export"]["fused_attention_layers"] > 0
    assert raw["decoding"] == {"search": "greedy_tdt", "batched": True, "joint_lookahead": True}
    assert provenance.decoding == DecodingMethod()
    # The sentence manifests wrote before the field was typed describes the search the engine runs.
    legacy = parse_provenance({**raw, "decoding": "greedy TDT (label looping), one utterance at a time"})
    assert legacy.decoding == DecodingMethod()


def test_round_trip_writes_the_same_keys() -> None:
    manifest = load_manifest(default_model_dir())
    full = Provenance(
        source="nvidia/parakeet-tdt-0.6b-v2", source_sha256="ab", model_class="EncDecRNNTBPEModel",
        versions=Versions(torch="2.3"), python="3.11", converted_at="2026-01-01T00:00:00+00:00",
        encoder_export=EncoderExport(24, 24, 1024),
        parity=(ParityProbe("a.wav", 3, True, 1e-5, 2e-5),),
        quantization=Quantization("int8", "uint8", "dynamic", 0.98, 1, 2, activations="per-row"),
        dropped_heads=("ctc",),
    )
    for provenance in (manifest.provenance, full, Provenance()):
        written = json.loads(replace(manifest, provenance=provenance).to_json())
        assert parse_manifest(written).provenance == provenance
    body = full.to_dict()
    assert body["versions"]["parakeet-runtime"] == "unknown" and body["versions"]["torch"] == "2.3"
    assert body["encoder_export"] == {"fused_attention_layers": 24, "position_table_layers": 24,
                                      "position_table_frames": 1024}
    assert body["quantization"]["weights"] == "uint8" and body["quantization"]["token_agreement_with_fp32"] == 0.98
    assert body["quantization"]["activations"] == "per-row"
    assert body["decoding"] == {"search": "greedy_tdt", "batched": True, "joint_lookahead": True}
    assert "parity" not in Provenance().to_dict()  # a skipped check writes no parity list
    assert body["dropped_heads"] == ["ctc"] and "dropped_heads" not in Provenance().to_dict()


def test_older_records_parse_with_defaults() -> None:
    provenance = parse_provenance({"quantization": {"precision": "int8"}})
    assert provenance.quantization == Quantization(precision="int8")
    assert provenance.quantization.weights is None and provenance.quantization.token_agreement_with_fp32 is None
    # No recorded activations: the directory predates per-row scales, whose encoders all quantised per tensor.
    assert provenance.quantization.activations is None and provenance.quantization.scaling == "per-tensor"
    assert Quantization(precision="int8", activations="per-row-fixed").scaling == "per-row-fixed"
    assert provenance.versions == Versions() and provenance.parity is None
    assert parse_provenance({}) == Provenance()
    assert parse_provenance({}).dropped_heads == ()  # not recorded before hybrid checkpoints said so


@pytest.mark.parametrize(("edit", "message"), [
    ({"encoder_export": {"fused_attention_layers": "2", "position_table_layers": 2, "position_table_frames": 9}},
     "encoder_export.fused_attention_layers"),
    ({"encoder_export": {"fused_attention_layers": 2}}, "encoder_export"),
    ({"quantization": {"precision": "int8", "weights": 8}}, "quantization.weights"),
    ({"quantization": {"precision": "int8", "bits": 8}}, "unknown fields"),
    ({"parity": {"audio": "a"}}, "'parity' must be a list"),
    ({"parity": [{"audio": "a", "tokens": 1, "identical": "yes", "feature_max_abs_diff": 0.0,
                  "encoder_max_abs_diff": 0.0}]}, "parity.identical"),
    ({"decoding": "beam search"}, "unknown search"),
    ({"decoding": {"search": "beam"}}, "unknown search"),
    ({"versions": ["torch"]}, "versions"),
    ({"source": 3}, "'source' must be a string"),
    ({"dropped_heads": "ctc"}, "'dropped_heads' must be a list"),
    ({"dropped_heads": [""]}, "'dropped_heads' must be a list"),
])
def test_bad_provenance_is_a_manifest_error(edit: dict[str, Any], message: str, tmp_path: Path) -> None:
    model = tmp_path / "model"
    shutil.copytree(default_model_dir(), model)
    raw = _raw()
    raw["provenance"].update(edit)
    (model / "manifest.json").write_text(json.dumps(raw), encoding="utf-8")
    with pytest.raises(ManifestError, match=message):
        load_manifest(model)


def test_missing_model_directory_says_how_to_make_one(tmp_path: Path) -> None:
    missing = tmp_path / "parakeet-tdt-0.6b-v2"
    with pytest.raises(ModelDirectoryError, match="model directory not found") as error:
        Engine.load(missing)
    assert "convert-model nvidia/parakeet-tdt-0.6b-v2" in str(error.value)
    assert "convert-model model.nemo" in str(error.value)
