"""Functional checks of a load test: what makes a retrieval *correct*, not merely a 200.

Pure module (no ``locust`` import), shared by the users, the locust hooks and the summary:

- :class:`MultipartCheck` decodes a ``multipart/related; type="application/dicom"`` body as it
  streams and collects each part's SOP Instance UID; :meth:`MultipartCheck.verdict` compares them
  with the instances the manifest (or catalogue) references.
- :class:`FramesCheck` does the same for a frames answer (``application/octet-stream`` parts, one per
  frame asked for) and :func:`metadata_verdict` for a series' metadata (PS3.18 JSON), as a viewer
  loads a series.
- :func:`server_timing` / :func:`hop_breakdown` split a retrieval's time to first byte into the
  share of each gateway hop, from the ``Server-Timing`` entries every hop appends.
- :class:`Thresholds` turns failure ratio and p95 into pass/fail, the CI gate.
"""

from __future__ import annotations

import re
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ncp.dicom.multipart import MultipartDecoder
from ncp.errors import NcpError

__all__ = [
    "KOS_SOP_CLASS",
    "Check",
    "FramesCheck",
    "MultipartCheck",
    "Thresholds",
    "hop_breakdown",
    "metadata_verdict",
    "part10_identity",
    "server_timing",
]

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"  # Key Object Selection Document (PS3.4 B.5)
_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"})
_META_MAX = 64 * 1024
_SOP_INSTANCE_UID = "00080018"


def part10_identity(body: bytes) -> tuple[str, str]:
    """Media Storage SOP Class and Instance UIDs (0002,0002), (0002,0003) of a Part 10 instance.

    PS3.10 7.1: the File Meta Information is explicit VR little endian and its UIDs equal the
    dataset's SOP Class/Instance UIDs, so a few hundred bytes identify the instance. A full parse
    per part would make the generator, not the system, the bottleneck (docs/benchmarks.md).
    """
    if body[128:132] != b"DICM":
        raise ValueError("not a DICOM Part 10 instance (no 'DICM' prefix, PS3.10 7.1)")
    found: dict[int, str] = {}
    pos, end = 132, min(len(body), _META_MAX)
    while pos + 8 <= end and len(found) < 2:
        group, element = struct.unpack_from("<HH", body, pos)
        if group != 0x0002:
            break
        vr = body[pos + 4 : pos + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", body, pos + 8)
            value_at = pos + 12
        else:
            (length,) = struct.unpack_from("<H", body, pos + 6)
            value_at = pos + 8
        if element in (0x0002, 0x0003):
            found[element] = body[value_at : value_at + length].rstrip(b"\x00 ").decode("ascii", "replace")
        pos = value_at + length
    if 0x0003 not in found:
        raise ValueError("File Meta Information has no Media Storage SOP Instance UID (0002,0003)")
    return found.get(0x0002, ""), found[0x0003]


@dataclass
class StreamCheck:
    """A ``multipart/related`` answer fed chunk by chunk; memory stays bounded by the largest part."""

    content_type: str
    size: int = 0
    error: str | None = None
    _decoder: MultipartDecoder | None = None

    def __post_init__(self) -> None:
        try:
            self._decoder = MultipartDecoder(self.content_type)
        except NcpError as exc:
            self.error = exc.message

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self._decoder is None or self.error:
            return
        try:
            for part in self._decoder.feed(chunk):
                self._part(part.body)
        except (NcpError, ValueError, struct.error) as exc:
            self.error = str(getattr(exc, "message", None) or exc)

    def _part(self, body: bytes) -> None:
        raise NotImplementedError

    @property
    def instances(self) -> int:
        """How many instances the answer carried (the metrics' count)."""
        raise NotImplementedError

    def _unclosed(self) -> str | None:
        """Why the message is not complete (an error met, or no closing delimiter), else None: a clean
        short message is a failure, not a smaller study ("Data plane")."""
        if self.error:
            return str(self.error)
        assert self._decoder is not None
        try:
            self._decoder.close()
        except NcpError as exc:
            return str(exc.message)
        return None


@dataclass
class MultipartCheck(StreamCheck):
    """Instances of a study, series or instance retrieve (``application/dicom`` parts)."""

    received: list[str] = field(default_factory=list)
    kos: set[str] = field(default_factory=set)  # received instances that are KOS documents (manifest, KIN)

    def _part(self, body: bytes) -> None:
        sop_class, sop_instance = part10_identity(body)
        self.received.append(sop_instance)
        if sop_class == KOS_SOP_CLASS:
            self.kos.add(sop_instance)

    @property
    def instances(self) -> int:
        return len(self.received)

    def verdict(self, expected: Iterable[str], *, extra_kos: bool = False) -> str | None:
        """None when exactly the expected instances arrived once each, else why not.

        ``extra_kos`` tolerates unlisted KOS documents: a study holds its KIN, which the state
        file's catalogue does not list.
        """
        if (why := self._unclosed()) is not None:
            return why
        wanted = set(expected)
        got = set(self.received)
        if len(got) != len(self.received):
            return f"{len(self.received) - len(got)} instance(s) sent twice"
        missing, extra = wanted - got, got - wanted
        if extra_kos:
            extra -= self.kos
        if missing or extra:
            return f"instances differ from those referenced: {len(missing)} missing, {len(extra)} unexpected"
        return None


@dataclass
class FramesCheck(StreamCheck):
    """A frames answer (PS3.18 10.4.1.1.3): ``multipart/related`` of ``application/octet-stream`` (or a
    compressed pixel type) parts, one per frame asked for, none empty, the message closed."""

    frames: int = 0

    def _part(self, body: bytes) -> None:
        if not body:
            self.error = f"frame {self.frames + 1} is empty"
        self.frames += 1

    @property
    def instances(self) -> int:
        return 1  # the frames of one instance

    def verdict(self, expected_frames: int) -> str | None:
        if (why := self._unclosed()) is not None:
            return why
        if self.frames != expected_frames:
            return f"{self.frames} frame(s) where {expected_frames} were asked for"
        return None


def metadata_verdict(body: object, expected: Iterable[str]) -> str | None:
    """None when ``body`` (PS3.18 F.2 JSON) describes exactly the ``expected`` instances, once each."""
    if not isinstance(body, list) or not all(isinstance(d, dict) for d in body):
        return "metadata is not a JSON array of datasets (PS3.18 F.2)"
    found = []
    for dataset in body:
        values = (dataset.get(_SOP_INSTANCE_UID) or {}).get("Value") or [None]
        found.append(values[0])
    if len(set(found)) != len(found):
        return "an instance is described twice"
    wanted = set(expected)
    if set(found) != wanted:
        missing, extra = wanted - set(found), set(found) - wanted
        return f"metadata differs from the series: {len(missing)} missing, {len(extra)} unexpected"
    return None


_TIMING = re.compile(r"^\s*([!#$%&'*+\-.^_`|~0-9A-Za-z]+)\s*(;.*)?$")
_DUR = re.compile(r";\s*dur\s*=\s*\"?([0-9]+(?:\.[0-9]+)?)\"?")


def server_timing(header: str | None) -> list[tuple[str, float]]:
    """``Server-Timing`` metrics with a ``dur`` (W3C Server Timing 3), in header order.

    Each gateway appends its own entry after the ones it relays, so the order runs from the
    innermost hop (nearest the PACS) to the outermost (the consumer's gateway).
    """
    out: list[tuple[str, float]] = []
    for item in (header or "").split(","):
        m = _TIMING.match(item)
        if not m:
            continue
        d = _DUR.search(m.group(2) or "")
        if d:
            out.append((m.group(1), float(d.group(1))))
    return out


def hop_breakdown(ttfb_ms: float, timings: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    """Split the client's time to first byte into each hop's own share (ms).

    A hop's ``dur`` is its time to the next hop's headers, so its own share is what the outer
    side saw minus ``dur``; the innermost ``dur`` is the origin's (PACS) share::

        ttfb 25 ms, ncp-at-gateway dur 18, ncp-fr-border dur 5
        -> ncp-at-gateway 7, ncp-fr-border 13, origin 5
    """
    shares: list[tuple[str, float]] = []
    outer = ttfb_ms
    for name, dur in reversed(timings):  # outermost first
        shares.append((name, max(0.0, outer - dur)))
        outer = dur
    if timings:
        shares.append(("origin", outer))
    return shares


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Thresholds:
    """Pass/fail limits; None disables a check."""

    max_fail_ratio: float | None = 0.0
    max_p95_ms: float | None = None
    min_requests: int = 1

    def evaluate(self, requests: int, failures: int, p95_ms: float | None) -> list[Check]:
        ratio = failures / requests if requests else 0.0
        checks = [Check("requests", requests >= self.min_requests, f"{requests} >= {self.min_requests}")]
        if self.max_fail_ratio is not None:
            checks.append(
                Check(
                    "fail ratio",
                    ratio <= self.max_fail_ratio,
                    f"{ratio:.2%} ({failures}/{requests}) <= {self.max_fail_ratio:.2%}",
                )
            )
        if self.max_p95_ms is not None:
            ok = p95_ms is not None and p95_ms <= self.max_p95_ms
            checks.append(Check("p95", ok, f"{p95_ms} ms <= {self.max_p95_ms:g} ms"))
        return checks
