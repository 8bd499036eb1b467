"""Every code block of README.md runs, as written, against the bundled demo model.

Each block runs in one working directory prepared for the README: a copy of this checkout (so that
``pip install .`` works as in a checkout) holding the files the README names — ``clip.wav``, ``a.flac``,
``b.ogg``, ``meeting.flac`` (the bundled sample clip), ``phone.wav`` (the same at 22050 Hz),
``my_model.nemo`` (the demo model's checkpoint, ``recipes/demo_model/demo.nemo``) and a model directory
``parakeet-tdt-0.6b-v2`` (the bundled demo model's directory under that name).

* ``python`` blocks run with this interpreter.
* ``bash`` blocks run with ``bash -e -o pipefail``, with a fresh virtual environment's ``bin`` first on
  ``PATH`` and this one's next. Nothing may reach the network (``PIP_NO_INDEX``): every virtual
  environment a block makes sees this environment's packages (``PYTHONPATH``), so ``pip install .``,
  ``'.[server]'`` and ``'.[export]'`` install the package from the checkout copy into the block's own
  environment without downloading anything (and without build isolation, which would download
  setuptools), and never touch this one.
* A ``parakeet-runtime serve`` line starts the server in the background on 127.0.0.1 and a free port (the
  README's ``--host``/``--port`` and its port in later lines are replaced), waits (bounded) for
  ``/health``, runs the lines after it, then stops the server with SIGTERM.
* Other blocks (``text``) are checked by what they describe: the command-line synopsis against the
  argument parsers, the layout against the directories.

An HTML comment right before a block steers the harness: ``<!-- readme-test: KEY[: VALUE]; ... -->`` with
``skip: REASON``, ``needs: nemo`` (skipped, with the reason, where NeMo is not installed),
``expect-sample-text`` (the output has the demo model's transcript of the sample clip),
``expect-line: LINE`` (the output has this line), ``synopsis``, ``layout``.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import soundfile

from parakeet_runtime.engine import BatchingOptions, Engine, SessionOptions, sample_audio_path
from parakeet_runtime.engine.requests.resample import resample

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MARKER = re.compile(r"^<!--\s*readme-test:\s*(?P<body>.*?)\s*-->$")
FENCE = re.compile(r"^```(?P<lang>[\w-]*)\s*$")
COPY_IGNORE = shutil.ignore_patterns(".git", ".venv", ".fixtures", ".demo-build", "build", "dist", "*.egg-info",
                                     "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache")
AUDIO_FILES = {"clip.wav": 16000, "a.flac": 16000, "b.ogg": 16000, "meeting.flac": 16000, "phone.wav": 22050}
MODEL_NAME = "parakeet-tdt-0.6b-v2"
PYTHON_TIMEOUT_S = 120
BASH_TIMEOUT_S = 300
SERVER_START_TIMEOUT_S = 60
SERVER_STOP_TIMEOUT_S = 30


@dataclass(frozen=True)
class Block:
    """One fenced code block of README.md."""

    line: int
    """1-based line of the opening fence."""
    lang: str
    """The fence's language (``""`` when it has none)."""
    code: str
    """The block's text."""
    options: tuple[tuple[str, str], ...]
    """``(key, value)`` pairs from a ``readme-test`` comment right before the block."""

    def option(self, key: str) -> str | None:
        return next((value for k, value in self.options if k == key), None)

    def has(self, key: str) -> bool:
        return any(k == key for k, _ in self.options)


def parse_options(body: str) -> tuple[tuple[str, str], ...]:
    options = []
    for part in body.split(";"):
        key, _, value = part.strip().partition(":")
        if key.strip():
            options.append((key.strip(), value.strip()))
    return tuple(options)


def readme_blocks(text: str) -> list[Block]:
    blocks: list[Block] = []
    lines = text.splitlines()
    index = 0
    while index < len(lines):
        fence = FENCE.match(lines[index])
        if fence is None:
            index += 1
            continue
        start = index
        end = next((i for i in range(start + 1, len(lines)) if lines[i].rstrip() == "```"), None)
        if end is None:
            raise ValueError(f"README.md:{start + 1}: code block never closed")
        before = next((lines[i].strip() for i in range(start - 1, -1, -1) if lines[i].strip()), "")
        marker = MARKER.match(before)
        options = parse_options(marker["body"]) if marker else ()
        blocks.append(Block(start + 1, fence["lang"], "\n".join(lines[start + 1:end]) + "\n", options))
        index = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
KNOWN_OPTIONS = {"skip", "needs", "expect-sample-text", "expect-line", "synopsis", "layout"}


def test_readme_markers_are_known() -> None:
    for block in BLOCKS:
        unknown = {key for key, _ in block.options} - KNOWN_OPTIONS
        assert not unknown, f"README.md:{block.line}: unknown readme-test option {sorted(unknown)}"
    markers = [line for line in README.read_text(encoding="utf-8").splitlines() if MARKER.match(line.strip())]
    assert len(markers) == sum(1 for block in BLOCKS if block.options), "a readme-test comment not right before a block"


# --- the working directory ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def expected_text() -> str:
    """What the bundled demo model makes of the sample clip (tests/test_default_model.py checks it with NeMo)."""
    return Engine.load(batching=BatchingOptions(enabled=False)).transcribe(sample_audio_path()).text


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("readme") / "parakeet-runtime"
    shutil.copytree(ROOT, work, symlinks=True, ignore=COPY_IGNORE)
    samples, rate = soundfile.read(sample_audio_path(), dtype="float32")
    for name, target_rate in AUDIO_FILES.items():
        audio = samples if target_rate == rate else resample(samples, rate, target_rate)
        soundfile.write(work / name, np.asarray(audio, dtype=np.float32), target_rate)
    (work / MODEL_NAME).symlink_to(Path("engine") / "default_model", target_is_directory=True)
    (work / "my_model.nemo").symlink_to(Path("recipes") / "demo_model" / "demo.nemo")
    return work


def block_environment(venv: Path) -> dict[str, str]:
    """The environment a bash block runs in: ``venv`` (a fresh one) first on PATH, offline pip."""
    site_dirs = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    env = dict(os.environ)
    env.update(
        PATH=os.pathsep.join([str(venv / "bin"), str(Path(sys.executable).parent), env.get("PATH", "")]),
        VIRTUAL_ENV=str(venv),
        PYTHONPATH=os.pathsep.join(site_dirs),
        PIP_NO_INDEX="1",
        PIP_NO_BUILD_ISOLATION="0",  # pip reads this variable inverted: "0" turns build isolation off
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PYTHONUNBUFFERED="1",
    )
    env.pop("PYTHONHOME", None)
    return env


def make_venv(path: Path) -> Path:
    """A virtual environment without its own pip: ``bin/pip`` runs this environment's pip (on PYTHONPATH)
    for the new environment's interpreter, so that it installs into the new environment."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True, timeout=60)
    pip = path / "bin" / "pip"
    pip.write_text(f"#!{path / 'bin' / 'python'}\n"
                   "import sys\nfrom pip._internal.cli.main import main\nsys.exit(main())\n")
    pip.chmod(0o755)
    return path


# --- running blocks -----------------------------------------------------------------------------------


def _tail(text: str, limit: int = 4000) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]


def _check(block: Block, result: subprocess.CompletedProcess[str]) -> str:
    output = result.stdout
    assert result.returncode == 0, (
        f"README.md:{block.line}: exit code {result.returncode}\n--- stdout\n{_tail(output)}\n"
        f"--- stderr\n{_tail(result.stderr)}"
    )
    return output


def _check_output(block: Block, output: str, expected_text: str) -> None:
    if block.has("expect-sample-text"):
        assert expected_text and expected_text in output, (
            f"README.md:{block.line}: the output lacks the sample's transcript {expected_text!r}:\n{_tail(output)}"
        )
    line = block.option("expect-line")
    if line is not None:
        assert line in output.splitlines(), f"README.md:{block.line}: no line {line!r} in:\n{_tail(output)}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return int(response.status) == 200
    except (urllib.error.URLError, OSError):
        return False


SERVER_LINE = re.compile(r"^parakeet-runtime\s+serve\b")


def _server_command(line: str, port: int) -> tuple[str, str]:
    """The serve line bound to 127.0.0.1:port, and the port the README's line uses."""
    documented = re.search(r"--port[ =](\d+)", line)
    command = re.sub(r"\s--(host|port)[ =]\S+", "", line.split("#", 1)[0]).rstrip()
    return f"{command} --host 127.0.0.1 --port {port}", documented[1] if documented else "8000"


def _run_bash(code: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", "-e", "-o", "pipefail", "-c", code], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=BASH_TIMEOUT_S)


def _run_with_server(block: Block, workspace: Path, env: dict[str, str], tmp_path: Path) -> str:
    lines = block.code.splitlines()
    at = next(i for i, line in enumerate(lines) if SERVER_LINE.match(line))
    before, after = "\n".join(lines[:at]), "\n".join(lines[at + 1:])
    outputs = []
    if before.strip():
        outputs.append(_check(block, _run_bash(before, workspace, env)))
    port = _free_port()
    command, documented_port = _server_command(lines[at], port)
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with log_path.open("w") as log:
        server = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=workspace, env=env, stdout=log,
                                  stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + SERVER_START_TIMEOUT_S
            while not _healthy(url):
                assert server.poll() is None, (
                    f"README.md:{block.line}: the server exited with {server.returncode}:\n"
                    f"{_tail(log_path.read_text())}")
                assert time.monotonic() < deadline, f"README.md:{block.line}: no healthy server within " \
                    f"{SERVER_START_TIMEOUT_S} s:\n{_tail(log_path.read_text())}"
                time.sleep(0.2)
            rest = re.sub(rf"(?<=:){documented_port}\b", str(port), after)
            outputs.append(_check(block, _run_bash(rest, workspace, env)))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                code = server.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait(timeout=SERVER_STOP_TIMEOUT_S)
                raise AssertionError(f"README.md:{block.line}: the server did not stop on SIGTERM "
                                     f"within {SERVER_STOP_TIMEOUT_S} s") from None
    # uvicorn shuts down gracefully on SIGTERM, then re-raises it (newer versions): 0 or -SIGTERM.
    assert code in (0, -signal.SIGTERM), (
        f"README.md:{block.line}: the server exited with {code}:\n{_tail(log_path.read_text())}")
    assert "Finished server process" in log_path.read_text(), f"README.md:{block.line}: no graceful shutdown"
    return "".join(outputs)


# --- text blocks: the synopsis and the layout -----------------------------------------------------------


class _CapturedParserError(Exception):
    def __init__(self, parser: argparse.ArgumentParser) -> None:
        super().__init__()
        self.parser = parser


def capture_parser(parse_args: Callable[[Sequence[str]], object], monkeypatch: pytest.MonkeyPatch
                   ) -> argparse.ArgumentParser:
    """The parser a CLI's ``parse_args`` builds (stopped where it would parse)."""

    def capture(self: argparse.ArgumentParser, *args: object, **kwargs: object) -> argparse.Namespace:
        raise _CapturedParserError(self)

    with monkeypatch.context() as patch:
        patch.setattr(argparse.ArgumentParser, "parse_args", capture)
        patch.setattr(argparse.ArgumentParser, "parse_known_args", capture)
        try:
            parse_args([])
        except _CapturedParserError as captured:
            return captured.parser
    raise AssertionError(f"{parse_args} did not parse")


def parser_options(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    return [action for action in parser._actions if action.option_strings and "--help" not in action.option_strings]


def subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def synopsis_commands(code: str) -> dict[str, str]:
    """``"convert-model"``, ``"parakeet-runtime serve"``, … -> the synopsis text documenting it."""
    commands: dict[str, str] = {}
    key = ""
    for line in code.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            assert key, f"continuation line without a command: {line!r}"
            commands[key] += " " + line.strip()
            continue
        words = line.split()
        key = words[0] if len(words) < 2 or words[1].startswith("-") or words[1].isupper() else " ".join(words[:2])
        commands[key] = commands.get(key, "") + " " + " ".join(words[len(key.split()):])
    return commands


FLAG = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
FLAG_CHOICES = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)[ =]([\w.-]+(?:\|[\w.-]+)*)")


def check_synopsis(text: str, parser: argparse.ArgumentParser, name: str) -> list[str]:
    problems = []
    documented = set(FLAG.findall(text))
    actions = parser_options(parser)
    known = {option for action in actions for option in action.option_strings}
    for flag in sorted(documented - known):
        problems.append(f"{name}: {flag} is documented but the parser has no such option")
    for action in actions:
        if not documented & set(action.option_strings):
            problems.append(f"{name}: {'/'.join(action.option_strings)} is not documented")
    shown = {flag: set(values.split("|")) for flag, values in FLAG_CHOICES.findall(text)}
    for action in actions:
        if action.choices is None:
            continue
        flag = next((option for option in action.option_strings if option in shown), None)
        if flag is None:
            problems.append(f"{name}: {'/'.join(action.option_strings)} is documented without its choices")
        elif shown[flag] != {str(choice) for choice in action.choices}:
            problems.append(f"{name}: {flag} documents {sorted(shown[flag])}, the parser takes "
                            f"{sorted(str(c) for c in action.choices)}")
    return problems


def run_synopsis(block: Block, monkeypatch: pytest.MonkeyPatch) -> None:
    from parakeet_runtime.engine.serving import cli as engine_cli
    from parakeet_runtime.export import cli as export_cli

    commands = synopsis_commands(block.code)
    runtime = capture_parser(engine_cli.parse_args, monkeypatch)
    parsers = {"parakeet-runtime": runtime, "convert-model": capture_parser(export_cli.parse_args, monkeypatch)}
    parsers.update({f"parakeet-runtime {name}": sub for name, sub in subparsers(runtime).items()})
    missing = sorted(set(parsers) - set(commands))
    assert not missing, f"README.md:{block.line}: the synopsis lacks {missing}"
    unknown = sorted(set(commands) - set(parsers))
    assert not unknown, f"README.md:{block.line}: the synopsis shows unknown commands {unknown}"
    problems = [p for name, text in commands.items() for p in check_synopsis(text, parsers[name], name)]
    assert not problems, f"README.md:{block.line}: the synopsis does not match the parsers:\n" + "\n".join(problems)


def run_layout(block: Block) -> None:
    """Every listed directory exists (an indented line names a folder of the line above it), and every
    subpackage of a listed code folder is listed."""
    listed: list[str] = []
    parent = ""
    for line in block.code.splitlines():
        if not line.strip():
            continue
        name = line.split()[0]
        if line[0].isspace():
            listed.append(parent.rstrip("/") + "/" + name)
        else:
            parent = name
            listed.append(name)
    assert listed, f"README.md:{block.line}: an empty layout"
    missing = [name for name in listed if not (ROOT / name).is_dir()]
    assert not missing, f"README.md:{block.line}: the layout lists directories that do not exist: {missing}"
    shown = {name.rstrip("/") for name in listed}
    unlisted = sorted(
        str(init.parent.relative_to(ROOT))
        for folder in ("engine", "export", "decoding")
        for init in (ROOT / folder).glob("*/__init__.py")
    )
    unlisted = [name for name in unlisted if name not in shown]
    assert not unlisted, f"README.md:{block.line}: the layout does not show the subpackages {unlisted}"


# --- the test -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("block", BLOCKS, ids=[f"line{b.line}-{b.lang or 'plain'}" for b in BLOCKS])
def test_readme_block(block: Block, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch,
                      tmp_path: Path) -> None:
    reason = block.option("skip")
    if reason is not None:
        assert reason, f"README.md:{block.line}: a skip needs a reason"
        pytest.skip(f"README.md:{block.line}: {reason}")
    if block.option("needs") == "nemo" and not (importlib.util.find_spec("nemo") and importlib.util.find_spec("torch")):
        pytest.skip(f"README.md:{block.line}: needs NeMo and torch (the export extra), not installed here")
    if block.has("synopsis"):
        run_synopsis(block, monkeypatch)
        return
    if block.has("layout"):
        run_layout(block)
        return
    workspace: Path = request.getfixturevalue("workspace")
    expected_text: str = request.getfixturevalue("expected_text")
    env = block_environment(make_venv(tmp_path / "venv"))
    if block.lang == "python":
        result = subprocess.run([sys.executable, "-c", block.code], cwd=workspace, env=env, capture_output=True,
                                text=True, timeout=PYTHON_TIMEOUT_S)
        output = _check(block, result)
    elif block.lang == "bash":
        if any(SERVER_LINE.match(line) for line in block.code.splitlines()):
            output = _run_with_server(block, workspace, env, tmp_path)
        else:
            output = _check(block, _run_bash(block.code, workspace, env))
    else:
        raise AssertionError(f"README.md:{block.line}: no way to test a ```{block.lang} block; "
                             "mark it (see tests/test_readme.py)")
    _check_output(block, output, expected_text)


def test_readme_has_blocks_of_every_kind() -> None:
    """The harness would pass vacuously on a README it cannot parse."""
    langs = {block.lang for block in BLOCKS}
    assert {"python", "bash"} <= langs
    assert any(block.has("synopsis") for block in BLOCKS)
    # Skipped: the test command itself, two that need internet (hub downloads), one that needs a Ray cluster
    # (tests/test_ray.py runs those calls on a local cluster).
    assert sum(1 for block in BLOCKS if block.has("skip")) <= 4, "few blocks may be skipped"


# --- the options table -----------------------------------------------------------------------------------


OPTION_ROW = re.compile(
    r"^\|\s*`(?P<cls>BatchingOptions|SessionOptions)\.(?P<name>\w+)`\s*\|\s*(?P<default>[^|]+?)\s*\|")


def test_options_table_lists_every_option_with_its_default() -> None:
    rows = {(m["cls"], m["name"]): m["default"].strip("`")
            for m in map(OPTION_ROW.match, README.read_text(encoding="utf-8").splitlines()) if m}
    expected = {(cls.__name__, field.name): repr(field.default)
                for cls in (BatchingOptions, SessionOptions) for field in dataclasses.fields(cls)}
    assert set(rows) == set(expected), (
        f"options missing from the README table: {sorted(set(expected) - set(rows))}; "
        f"in the table but not in the code: {sorted(set(rows) - set(expected))}")
    wrong = {key: (rows[key], value) for key, value in expected.items() if rows[key] != value}
    assert not wrong, f"README defaults differ from the code (README, code): {wrong}"
