"""A running ``xcwado up`` owns its run folder and state file: a second one is refused in one line (it used
to re-seed the first one's folder and overwrite its state file); fixed ports with ``--base-port``; absolute
paths in the state file; the state file disappears when the federation stops."""

from __future__ import annotations

import json
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cli_support import ROOT, refused, xcwado

from ncp.app import _bindable
from ncp.federation import hold_run

PORTS = 9  # the default topology: FR gateway (2 listeners), registry, 2 PACS; AT gateway (2), registry, VNA


def _free_block(n: int) -> int:
    """The first of ``n`` consecutive free loopback ports, below the ephemeral range (as ncp.server)."""
    for _ in range(200):
        base = random.randrange(20000, 32000 - n)
        if all(_bindable("127.0.0.1", p) for p in range(base, base + n)):
            return base
    raise RuntimeError("no block of free ports")


@dataclass
class Running:
    folder: Path
    state: Path
    base_port: int
    proc: subprocess.Popen[str]
    doc: dict[str, Any]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One ``xcwado up`` started from its own folder with relative paths, unseeded (fast)."""
    folder = tmp_path_factory.mktemp("up")
    shutil.copy(ROOT / "ncp" / "topologies" / "default.toml", folder / "mine.toml")
    base = _free_block(PORTS)
    options = [
        "--topology",
        "mine.toml",
        "--run-dir",
        "run",
        "--state",
        "state.json",
        "--base-port",
        str(base),
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "ncp.cli", "up", "--no-seed", *options],
        cwd=folder,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    state = folder / "state.json"
    deadline = time.monotonic() + 180
    while not state.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.3)
    try:
        assert state.exists(), proc.stdout.read() if proc.stdout and proc.poll() is not None else "timeout"
        yield Running(folder, state, base, proc, json.loads(state.read_text()))
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)


def test_the_state_file_names_every_path_absolutely(running: Running) -> None:
    doc = running.doc
    assert doc["run_dir"] == str(running.folder / "run")
    assert doc["topology"] == str(running.folder / "mine.toml")
    security = doc["security"]
    paths = [security["pki_dir"], security["ca_file"]]
    paths += [p for c in security["ncp_client_credentials"].values() for p in c.values()]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in paths), paths


def test_base_port_gives_the_roles_consecutive_ports(running: Running) -> None:
    ports = []
    for country in running.doc["countries"].values():
        urls = [country["gateway"], country["border"], *country["registries"], *country["pacs"].values()]
        ports += [int(u.split(":")[2].split("/")[0]) for u in urls]
    assert sorted(ports) == list(range(running.base_port, running.base_port + PORTS))


def test_a_second_up_on_the_same_run_folder_is_refused(running: Running, tmp_path: Path) -> None:
    before = running.state.read_bytes()
    done = xcwado("up", "--run-dir", str(running.folder / "run"), "--state", str(tmp_path / "s.json"))
    refused(done, f"run folder {running.folder / 'run'} is in use", f"pid {running.proc.pid}", "--run-dir")
    assert running.state.read_bytes() == before and not (tmp_path / "s.json").exists()


def test_a_second_up_on_the_same_state_file_is_refused_before_touching_its_folder(
    running: Running, tmp_path: Path
) -> None:
    before = running.state.read_bytes()
    done = xcwado("up", "--run-dir", str(tmp_path / "other"), "--state", str(running.state))
    refused(done, f"state file {running.state} is in use", "--state")
    assert running.state.read_bytes() == before
    assert not (tmp_path / "other" / "plan.json").exists()


def test_a_base_port_that_is_taken_is_refused_naming_the_port(running: Running, tmp_path: Path) -> None:
    taken = running.base_port + 2
    done = xcwado(
        "up", "--run-dir", str(tmp_path / "r"), "--state", str(tmp_path / "s"), "--base-port", str(taken)
    )
    refused(done, f"port {taken} (FR/gateway)", "in use")
    assert not (tmp_path / "r" / "plan.json").exists()


def test_stopping_removes_the_state_file_and_frees_the_folder(running: Running) -> None:
    running.proc.send_signal(signal.SIGINT)
    assert running.proc.wait(timeout=60) == 0
    assert not running.state.exists()
    with hold_run(running.folder / "run", running.state):  # free again: the next up may take it
        pass
