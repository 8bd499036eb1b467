"""convert-model never writes over, into or around its own source, and says so in one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from parakeet_runtime.engine import default_model_dir
from parakeet_runtime.export.cli import main
from parakeet_runtime.export.errors import ConversionError
from parakeet_runtime.export.output_dir import check_output_dir, staging_dir


@pytest.fixture
def model(tmp_path: Path) -> Path:
    """A copy of the bundled model directory inside ``tmp_path/parent``."""
    copy = tmp_path / "parent" / "model"
    shutil.copytree(default_model_dir(), copy)
    return copy


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


@pytest.mark.parametrize("where", ["itself", "its parent", "inside it"])
def test_layout_output_that_would_reach_the_source_is_refused(where: str, model: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    """``--layout onnx-asr m m --overwrite`` used to replace the model with its onnx-asr copy, and
    ``... m parent --overwrite`` deleted the parent folder and everything in it."""
    out = {"itself": model, "its parent": model.parent, "inside it": model / "inside" / "deeper"}[where]
    before = _files(model.parent)
    code = main(["--layout", "onnx-asr", str(model), str(out), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "source" in err, err
    assert _files(model.parent) == before


def test_a_checkpoint_in_the_output_folder_is_not_replaced(tmp_path: Path) -> None:
    nemo = tmp_path / "models" / "model.nemo"
    nemo.parent.mkdir()
    nemo.write_bytes(b"not read: the output is refused first")
    with pytest.raises(ConversionError, match="would replace the source"):
        check_output_dir(nemo, nemo.parent, overwrite=True)
    with pytest.raises(ConversionError, match="is a file"):
        check_output_dir(nemo, nemo, overwrite=True)
    assert check_output_dir("nvidia/parakeet-tdt-0.6b-v2", tmp_path / "out", overwrite=False) == tmp_path / "out"
    assert nemo.is_file()


@pytest.mark.parametrize(("out", "message"), [
    ("home", "is, or contains, your home folder"),
    (".", "is, or contains, your home folder"),
    ("home/.cache", "is, or contains, Hugging Face.s folder"),
    ("home/.cache/huggingface/hub/models--nvidia--x", "is inside the Hugging Face cache"),
    ("nemo-cache/sub", "is inside NeMo's model cache"),
])
def test_output_folders_that_hold_a_home_or_a_model_cache_are_refused(
        out: str, message: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``convert-model nvidia/parakeet-tdt-0.6b-v2 ~/.cache --overwrite`` would have deleted the Hugging Face
    cache holding the checkpoint it converts (and ``~`` the home folder) when the work ended."""
    home = tmp_path / "home"
    (home / ".cache" / "huggingface" / "hub" / "models--nvidia--x").mkdir(parents=True)
    (tmp_path / "nemo-cache").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("NEMO_CACHE_DIR", str(tmp_path / "nemo-cache"))
    monkeypatch.chdir(tmp_path / "nemo-cache")  # the current directory is not what is refused here
    target = home / "x" / ".." if out == "." else tmp_path / out
    with pytest.raises(ConversionError, match=message):
        check_output_dir("nvidia/parakeet-tdt-0.6b-v2", target, overwrite=True)
    assert check_output_dir("nvidia/parakeet-tdt-0.6b-v2", home / "models" / "x", overwrite=True).parent == (
        home / "models")  # a folder of its own inside the home folder is fine


def test_the_hugging_face_cache_under_xdg_cache_home_is_protected(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """huggingface_hub puts its cache in ``$XDG_CACHE_HOME/huggingface`` when ``HF_HOME`` is unset."""
    xdg = tmp_path / "xdg"
    (xdg / "huggingface" / "hub").mkdir(parents=True)
    monkeypatch.setenv("XDG_CACHE_HOME", str(xdg))
    for name in ("HF_HOME", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(ConversionError, match="Hugging Face"):
        check_output_dir("nvidia/parakeet-tdt-0.6b-v2", xdg, overwrite=True)
    with pytest.raises(ConversionError, match="is inside the Hugging Face cache"):
        check_output_dir("nvidia/parakeet-tdt-0.6b-v2", xdg / "huggingface" / "hub" / "m", overwrite=True)


@pytest.mark.parametrize("out", ["afile", "afile/sub"])
def test_output_paths_that_cannot_be_directories_are_one_line(out: str, model: Path, tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "afile").write_text("")
    code = main(["--layout", "onnx-asr", str(model), str(tmp_path / out), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert (tmp_path / "afile").read_text() == ""


def test_staging_beside_an_unwritable_place_is_a_conversion_error(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("")
    with pytest.raises(ConversionError, match="cannot write"):
        staging_dir(tmp_path / "afile" / "model")


@pytest.mark.parametrize("out", [".", "sub/..", ""])
def test_the_current_directory_is_never_an_output(out: str, model: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """``.`` put the staging folder inside OUT_DIR, and ``--overwrite`` emptied the folder before failing."""
    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    (work / "precious").write_text("keep me")
    monkeypatch.chdir(work)
    code = main(["--layout", "onnx-asr", str(model), out, "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "current directory" in err, err
    assert (work / "precious").read_text() == "keep me"


def test_a_home_relative_source_is_protected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.nemo").write_bytes(b"checkpoint")
    with pytest.raises(ConversionError, match="would replace the source"):
        check_output_dir("~/models/m.nemo", tmp_path / "models", overwrite=True)


def test_a_symbolic_link_as_output_is_refused(model: Path, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "data").write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(elsewhere, target_is_directory=True)
    code = main(["--layout", "onnx-asr", str(model), str(link), "--overwrite"])
    err = capsys.readouterr().err
    assert code == 2 and "symbolic link" in err, err
    assert (elsewhere / "data").read_text() == "keep me"


def test_an_absolute_output_is_returned(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert check_output_dir(None, "out", overwrite=False) == tmp_path / "out"


def _fake_convert(monkeypatch: pytest.MonkeyPatch, converted_into: list[Path]) -> None:
    """``convert`` replaced by a copy of the bundled model directory into its OUT_DIR (no NeMo run)."""
    import parakeet_runtime.export.convert as convert_module
    from parakeet_runtime.engine.model.manifest import load_manifest

    def fake(source: object, out_dir: str, **_: object) -> convert_module.ConversionReport:
        out = Path(out_dir)
        shutil.copytree(default_model_dir(), out)
        converted_into.append(out)
        return convert_module.ConversionReport(out_dir=out, manifest=load_manifest(out), probes=(), seconds=0.0)

    monkeypatch.setattr(convert_module, "convert", fake)


def test_layout_from_a_checkpoint_goes_through_a_folder_beside_out_dir(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``convert-model --layout onnx-asr model.nemo OUT``: this project's layout is converted beside OUT and removed
    after, OUT holds only onnx-asr's layout."""
    pytest.importorskip("nemo")
    converted_into: list[Path] = []
    _fake_convert(monkeypatch, converted_into)
    checkpoint = tmp_path / "model.nemo"
    checkpoint.write_bytes(b"not read: convert is replaced")
    out = tmp_path / "out" / "onnx-asr"
    assert main(["--layout", "onnx-asr", str(checkpoint), str(out)]) == 0, capsys.readouterr().err
    assert converted_into and converted_into[0].parent.parent == out.parent and not converted_into[0].exists()
    assert (out / "encoder-model.onnx").is_file() and not (out / "manifest.json").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["onnx-asr"]
    assert f"-> {out}" in capsys.readouterr().out


def test_a_failed_layout_after_converting_a_checkpoint_leaves_out_dir_as_it_was(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A failure while writing onnx-asr's layout used to leave OUT_DIR holding this project's layout (converted
    there first); now OUT_DIR is untouched: absent, or its old contents with --overwrite."""
    pytest.importorskip("nemo")
    import parakeet_runtime.export.layouts as layouts

    _fake_convert(monkeypatch, [])

    def failing(model_dir: Path, out_dir: Path) -> None:
        raise ConversionError("the layout could not be written")

    monkeypatch.setattr(layouts, "write_onnx_asr_layout", failing)
    checkpoint = tmp_path / "model.nemo"
    checkpoint.write_bytes(b"not read: convert is replaced")
    out = tmp_path / "out" / "onnx-asr"
    assert main(["--layout", "onnx-asr", str(checkpoint), str(out)]) == 2
    assert "the layout could not be written" in capsys.readouterr().err
    assert not out.exists() and list(out.parent.iterdir()) == []
    out.mkdir()
    (out / "old.txt").write_text("kept")
    assert main(["--layout", "onnx-asr", str(checkpoint), str(out), "--overwrite"]) == 2
    assert _files(out.parent) == ["onnx-asr", "onnx-asr/old.txt"]
    assert main(["--layout", "onnx-asr", str(checkpoint), str(out)]) == 2  # exists, no --overwrite: refused first
    assert "exists" in capsys.readouterr().err


# --- findings of a convert-model probe (2026-12-02) ----------------------------------------------------------


def test_overwrite_replaces_only_a_model_directory_or_an_empty_folder(tmp_path: Path, model: Path) -> None:
    """``--overwrite`` deleted whatever folder it was given (``/usr`` as readily as a model)."""
    other = tmp_path / "documents"
    other.mkdir()
    (other / "thesis.tex").write_text("kept")
    with pytest.raises(ConversionError, match="is not a model directory"):
        check_output_dir("nvidia/parakeet-tdt-0.6b-v2", other, overwrite=True)
    (tmp_path / "empty").mkdir()
    for folder in (model, tmp_path / "empty"):
        assert check_output_dir("nvidia/parakeet-tdt-0.6b-v2", folder, overwrite=True) == folder


def test_a_cache_that_does_not_exist_yet_is_protected(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The guard looked only at caches that existed: an OUT_DIR inside a future Hugging Face cache was accepted."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    with pytest.raises(ConversionError, match="is inside the Hugging Face cache"):
        check_output_dir("nvidia/parakeet-tdt-0.6b-v2", tmp_path / "hf" / "hub" / "x", overwrite=False)


def test_a_failed_replacement_leaves_the_old_folder_whole(tmp_path: Path, model: Path) -> None:
    """The old OUT_DIR was deleted file by file before the new one was renamed in: an interruption, or a file that
    could not be deleted, left part of it. Now it is renamed aside and comes back if the new one cannot go in."""
    from parakeet_runtime.export.output_dir import move_into_place

    before = _files(model)
    with pytest.raises(OSError):
        move_into_place(tmp_path / "no-such-staging", model, overwrite=True)
    assert _files(model) == before
    assert sorted(p.name for p in model.parent.iterdir()) == ["model"]  # the aside folder is gone too
    staging = staging_dir(model)
    (staging / "new.txt").write_text("new")
    move_into_place(staging, model, overwrite=True)
    assert _files(model) == ["new.txt"] and sorted(p.name for p in model.parent.iterdir()) == ["model"]


@pytest.mark.parametrize("stop", [KeyboardInterrupt, lambda: SystemExit(143)])
def test_layout_interrupted_while_writing_leaves_nothing_and_says_so(
        stop: Any, model: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """``--layout onnx-asr`` ran outside the interruption handling: Ctrl-C printed a traceback and SIGTERM left its
    staging folder beside OUT_DIR."""
    import parakeet_runtime.export.layouts as layouts
    from parakeet_runtime.export import cli

    def interrupted(model_dir: Path, out_dir: Path) -> None:
        (out_dir / "encoder-model.onnx").write_bytes(b"half")
        if stop is KeyboardInterrupt:
            raise KeyboardInterrupt
        cli_terminated.set()
        raise stop()

    import threading

    cli_terminated = threading.Event()
    monkeypatch.setattr(layouts, "write_onnx_asr_layout", interrupted)
    monkeypatch.setattr(cli, "_sigterm_as_exit", lambda: _Terminated(cli_terminated))
    out = tmp_path / "out"
    if stop is KeyboardInterrupt:
        assert main(["--layout", "onnx-asr", str(model), str(out)]) == 130
    else:
        with pytest.raises(SystemExit):
            main(["--layout", "onnx-asr", str(model), str(out)])
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nothing was written" in err and "Traceback" not in err, err
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["parent"]


class _Terminated:
    """Stands for ``sigterm_raises``: yields the event the fake SIGTERM sets."""

    def __init__(self, event: Any) -> None:
        self.event = event

    def __enter__(self) -> Any:
        return self.event

    def __exit__(self, *exc: object) -> None:
        return None


def test_an_interruption_held_during_the_swap_still_removes_the_old_folder(
        tmp_path: Path, model: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C held while the folders are renamed is raised as the swap ends: the old folder, renamed aside, was
    then never deleted (a hidden copy of the old model left beside OUT_DIR)."""
    import signal

    from parakeet_runtime.export.output_dir import move_into_place

    staging = staging_dir(model)
    (staging / "new.txt").write_text("new")
    rename = Path.rename

    def rename_then_interrupt(self: Path, target: Any) -> Any:
        moved = rename(self, target)
        if self == staging:
            signal.raise_signal(signal.SIGINT)  # held until the swap is done
        return moved

    monkeypatch.setattr(Path, "rename", rename_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        move_into_place(staging, model, overwrite=True)
    assert _files(model) == ["new.txt"] and sorted(p.name for p in model.parent.iterdir()) == ["model"]
