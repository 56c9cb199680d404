"""Serving a 200 MB study does not grow the server's memory with the study's size (docs/architecture.md).

The PACS runs in its own process (uvicorn, as a role runs) so its RSS is measured alone.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest
from pacs_samples import ct_dataset, part10

from ncp.dicom.multipart import MultipartDecoder
from ncp.dicom.uids import deterministic_uid
from ncp.pacs.store import InstanceStore
from ncp.server import free_port

INSTANCES = 100
SIDE = 1024  # 1024 x 1024 x 16 bit = 2 MiB per instance, 200 MiB per study
SERVER = """
import sys
from pathlib import Path
import uvicorn
from ncp.pacs.app import PacsSettings, create_pacs_app
app = create_pacs_app(PacsSettings(storage_dir=Path(sys.argv[1])))
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[2]), log_level="warning")
"""


def seed(storage: Path) -> str:
    """Write the big study straight into the store (STOW is not what is measured here)."""
    store = InstanceStore(storage)
    study, series = deterministic_uid("big-study"), deterministic_uid("big-series")
    ds = ct_dataset(study, series, deterministic_uid("big", 0), size=SIDE)
    for i in range(INSTANCES):
        sop = deterministic_uid("big", i)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = sop
        ds.InstanceNumber = i + 1
        store.put(part10(ds))
    return study


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, psutil.Process, str]]:
    study = seed(tmp_path)
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER, str(tmp_path), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(base + "/health").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "PACS process did not start"
            time.sleep(0.05)
        yield base + "/dicom-web", psutil.Process(proc.pid), study
    finally:
        proc.terminate()
        proc.wait(timeout=10)


class PeakRss:
    """Samples a process's RSS every few milliseconds while active."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self.peak = process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self.process.memory_info().rss)
            time.sleep(0.005)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def retrieve(client: httpx.Client, url: str) -> tuple[int, int]:
    """Stream a retrieval through the decoder; returns (parts, bytes)."""
    parts = size = 0
    with client.stream("GET", url, headers={"Accept": 'multipart/related; type="application/dicom"'}) as r:
        assert r.status_code == 200
        decoder = MultipartDecoder(r.headers["content-type"])
        for chunk in r.iter_raw(1 << 20):
            size += len(chunk)
            parts += len(decoder.feed(chunk))
        decoder.close()
    return parts, size


def test_serving_a_200_mb_study_keeps_server_memory_flat(server: tuple[str, psutil.Process, str]) -> None:
    base, process, study = server
    with httpx.Client(timeout=60) as client:
        retrieve(client, f"{base}/studies/{study}/series/{deterministic_uid('big-series')}"
                 f"/instances/{deterministic_uid('big', 0)}")  # warm-up: imports, buffers  # fmt: skip
        baseline = process.memory_info().rss
        with PeakRss(process) as rss:
            parts, size = retrieve(client, f"{base}/studies/{study}")

    assert parts == INSTANCES
    assert size > INSTANCES * SIDE * SIDE * 2
    growth = rss.peak - baseline
    assert growth < 40 * 2**20, (
        f"server RSS grew by {growth / 2**20:.1f} MiB for a {size / 2**20:.0f} MiB study"
    )
