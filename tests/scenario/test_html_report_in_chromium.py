"""The HTML report opened in a real browser (headless Debian `chromium`): screenshot, DOM, layout.

No federation: the results are hand-made, as in test_scenario_reports.py, but with realistic lengths
(WADO-RS URLs with UIDs, a long evidence text, a traceback line) so that overflow would show.
A missing `chromium` fails the test (run `make system-deps`); it is never skipped.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import Check, Exchange, Result, Scenario, Step
from ncp.scenario.reports import write_html

WIDTH, HEIGHT = 1280, 2000
TIMEOUT = 120  # seconds per chromium run (2 shared cores, cold start)
STUDY = "1.2.826.0.1.3680043.8.498.10368959262390373618446543337286373612"
EVIDENCE = (
    "eventCodeList of the DocumentReference is [('T-D4000','SRT','Abdomen')], expected the anatomical region "
    f"of study {STUDY} ('T-32000','SRT','Heart') from the KOS evidence sequence; "
    "registry answered 200 with 3 entries"
)
TRACEBACK = (
    "AssertionError: region again: " + EVIDENCE + "\n"
    '  File "/work/main/scenarios/federation.py", line 212, in region_again\n'
    "    ctx.check('region again', codes == expected, f'eventCodeList of the DocumentReference is {codes}')"
)


def _noop(ctx: ScenarioContext) -> None:
    """Does nothing."""


def _results() -> list[Result]:
    wado = f"https://pacs-b.example.eu:8443/dicom-web/studies/{STUDY}/series/{STUDY}.1/instances?includefield=all"
    iti67 = (
        "https://registry-a.example.eu:8443/fhir/DocumentReference?patient.identifier="
        "urn:oid:1.3.6.1.4.1.21367.13.20.1000|IHERED-994&status=current&event=T-D4000&_count=50"
    )
    ok_step = Step(
        "query the registry, then retrieve the study",
        [
            Exchange("GET", iti67, 200, 0.0312, 48211, ""),
            Exchange("GET", wado, 200, 0.2071, 1_048_576, ""),
        ],
        0.25,
        None,
        [Check("kin referenced from the manifest", True, "3 key images, all retrievable", "s", ("3.11",))],
    )
    bad_step = Step(
        "select the study by anatomical region",
        [
            Exchange(
                "GET",
                iti67,
                403,
                0.0123,
                312,
                '299 ncp-at "purpose of use refused, see https://policy.example.eu/ncp-at/' + "x" * 150 + '"',
            )
        ],
        0.05,
        None,
        [Check("region again", False, EVIDENCE, "select the study by anatomical region", ("2.1",))],
    )
    return [
        Result(
            Scenario(
                "XB-101",
                "Two-level query over the federation",
                ("query",),
                ("3.11",),
                ("ITI-67", "RAD-107"),
                _noop,
                group="federation",
            ),
            "passed",
            [ok_step],
            0.41,
            "",
            "builtin:default",
        ),
        Result(
            Scenario(
                "XB-102",
                "Anatomical region as level-1 key",
                ("query", "mcwg"),
                ("2.1",),
                ("ITI-67",),
                _noop,
                group="federation",
            ),
            "failed",
            [bad_step],
            0.09,
            TRACEBACK,
            "builtin:default",
        ),
    ]


def _chromium() -> str:
    exe = shutil.which("chromium")
    if exe is None:
        pytest.fail(
            "`chromium` is not installed: run `make system-deps` (apt-get install chromium)", pytrace=False
        )
    return exe


def _run_chromium(url: str, profile: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={WIDTH},{HEIGHT}",
        *extra,
        url,
    ]
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail(f"chromium did not finish within {TIMEOUT} s: {' '.join(cmd)}", pytrace=False)
    assert done.returncode == 0, f"chromium exited {done.returncode}: {done.stderr[-2000:]}"
    return done


def _png(path: Path) -> tuple[int, int, int, int, bytes]:
    """(width, height, bit depth, colour type, decompressed scanlines) of a PNG, read with struct + zlib."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG signature"
    pos, header, idat = 8, None, bytearray()
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + body) == crc, f"bad CRC in {kind!r} chunk"
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            break
        pos += 12 + length
    assert header is not None, "no IHDR chunk"
    width, height, depth, colour, _, _, _ = header
    return width, height, depth, colour, zlib.decompress(bytes(idat))


def _colours(width: int, height: int, depth: int, colour: int, raw: bytes) -> set[bytes]:
    """Distinct pixel values in the decoded image (PNG filters undone, 8-bit RGB/RGBA only)."""
    assert depth == 8 and colour in (2, 6), f"unexpected PNG format: depth {depth}, colour type {colour}"
    bpp = 3 if colour == 2 else 4
    stride = width * bpp
    prev = bytearray(stride)
    seen: set[bytes] = set()
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 8 == 0:  # sample every 8th row: enough to tell text from a blank page
            seen.update(bytes(line[x : x + bpp]) for x in range(0, stride, bpp))
        prev = line
    return seen


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("chromium") / "report.html"
    write_html(_results(), path)
    return path


def test_screenshot_is_a_non_blank_png_of_the_window_size(report: Path) -> None:
    png = report.with_name("report.png")  # kept as the test's artefact, next to the report
    _run_chromium(report.as_uri(), report.with_name("profile-shot"), f"--screenshot={png}")
    assert png.is_file() and png.stat().st_size > 0, f"no screenshot at {png}"
    width, height, depth, colour, raw = _png(png)
    assert (width, height) == (WIDTH, HEIGHT)
    colours = _colours(width, height, depth, colour, raw)
    assert len(colours) >= 8, f"only {len(colours)} distinct colours: the page did not render"
    red = {p for p in colours if p[0] > 150 and p[1] < 60 and p[2] < 60}
    green = {p for p in colours if p[1] > 80 and p[0] < 60 and p[2] < 60}
    assert red and green, "the failed (red) and passed (green) outcomes are not coloured"


def test_rendered_dom_has_the_scenarios_the_evidence_and_the_dashboard(report: Path) -> None:
    dom = _run_chromium(report.as_uri(), report.with_name("profile-dom"), "--dump-dom").stdout
    assert "<h1>XC-WADO testbed conformance report</h1>" in dom
    for sid in ("XB-101", "XB-102"):
        assert f'id="{sid}"' in dom and f'href="#{sid}"' in dom
    assert EVIDENCE in dom, "failed check's evidence not rendered"
    assert 'id="mcwg-dashboard"' in dom and "MCWG dashboard" in dom
    assert re.search(r'class="not-supported">not supported<', dom), "item 2.1 not marked not supported"
    assert re.search(r'class="supported">supported<', dom), "item 3.11 not marked supported"


def test_report_fits_the_window_width(report: Path) -> None:
    """No horizontal scrolling: long URLs, evidence and tracebacks wrap inside 1280 px."""
    probe = report.with_name("probe.html")
    probe.write_text(
        report.read_text(encoding="utf-8").replace(
            "</body>",
            "<script>const d=document.documentElement;"
            "document.body.insertAdjacentHTML('beforeend',"
            "'<p id=\"probe\">'+d.scrollWidth+'x'+d.clientWidth+'</p>')</script></body>",
        ),
        encoding="utf-8",
    )
    dom = _run_chromium(probe.as_uri(), report.with_name("profile-probe"), "--dump-dom").stdout
    found = re.search(r'<p id="probe">(\d+)x(\d+)</p>', dom)
    assert found, "layout probe did not run"
    scroll, client = map(int, found.groups())
    assert scroll <= client, f"report is {scroll} px wide in a {client} px window: it overflows horizontally"
