"""Helpers of the synth tests: catalogues with overridden options, dciodvfy on a dataset, PDF xref parsing."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest
from pydicom.dataset import Dataset

from ncp.dicom.dciodvfy import DciodvfyResult, dciodvfy_available, run_dciodvfy
from ncp.synth import CountryData, synthesize, to_part10
from ncp.topology import Topology

needs_dciodvfy = pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (dicom3tools) not installed")


def pacs_urls(topology: Topology, code: str) -> dict[str, str]:
    """Retrieve Location UID -> a WADO-RS base URI per PACS, as the federation would pass them."""
    return {
        p.retrieve_location_uid: f"http://127.0.0.1:{9000 + i}/{code.lower()}/{p.id}/dicom-web/"
        for i, p in enumerate(topology.country(code).pacs)
    }


def synth(topology: Topology, code: str, **options: Any) -> CountryData:
    """``code``'s catalogue, with SynthOptions fields overridden by ``options`` (seed, instance_kb, ...)."""
    topo = dataclasses.replace(topology, synth=dataclasses.replace(topology.synth, **options))
    return synthesize(topo, code, retrieve_urls=pacs_urls(topo, code))


def verify(ds: Dataset) -> DciodvfyResult:
    return run_dciodvfy(to_part10(ds))


def pdf_objects(pdf: bytes) -> dict[int, int]:
    """Object number -> byte offset, read from the xref table that ``startxref`` points to."""
    start = int(re.search(rb"startxref\n(\d+)\n%%EOF\n$", pdf).group(1))  # type: ignore[union-attr]
    assert pdf[start:].startswith(b"xref\n0 "), "startxref does not point at the xref table"
    header, _, rest = pdf[start + 5 :].partition(b"\n")
    first, count = (int(x) for x in header.split())
    entries = [rest[i * 20 : (i + 1) * 20] for i in range(count)]
    assert all(len(e) == 20 and e.endswith(b" \n") for e in entries), "xref entries must be 20 bytes"
    assert entries[0] == b"0000000000 65535 f \n"
    return {first + n: int(e[:10]) for n, e in enumerate(entries) if e[17:18] == b"n"}
