"""What an answer to a hostile request must look like, and what the federation must look like after.

Per answer: there is one (in time), its status is below 500, and a 4xx says why in the shape of its
protocol: an OperationOutcome on FHIR routes (``/fhir``, ``/idp``, the whole registry), a ``Warning``
header on DICOMweb ones (``/wado``, ``/wado-rs``, the whole PACS). A request uvicorn's HTTP parser
refuses before any app sees it is answered by uvicorn itself (a plain 400): counted apart, exempt from
the shape rule, since no route was reached.

After the run: no traceback in any role's log, every stored instance byte for byte as before (and
nothing left half-stored), every role still healthy.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote

from ncp.fuzz.wire import RawResponse

__all__ = ["LogWatch", "Problem", "Verdict", "judge", "snapshot", "snapshot_changes"]

PARSER_REFUSAL = b"Invalid HTTP request received."
_WARNING = re.compile(r'^\d{3} \S+ ".*"$')


@dataclass(frozen=True)
class Problem:
    category: str  # "status" (5xx, no answer), "shape", "traceback", "storage", "health" or "control"
    kind: str  # what went wrong, short enough to group by ("500", "404 without a Warning header")
    detail: str


@dataclass(frozen=True)
class Verdict:
    outcome: str  # "2xx" .. "5xx", or "none" (no answer)
    parser: bool  # refused by the HTTP parser, before any route
    problems: tuple[Problem, ...]


def shape_of(listener: str, method: bytes, target: bytes) -> str | None:
    """ "fhir", "dicomweb" or None (no rule): by role, and on a gateway by the route's first segment."""
    if method.upper() == b"HEAD":
        return None  # no body to carry an OperationOutcome
    if " pacs " in f" {listener} ":
        return "dicomweb"
    if " registry " in f" {listener} ":
        return "fhir"
    path = unquote(target.split(b"?", 1)[0].decode("latin-1"))  # as uvicorn decodes it
    first = path.split("/")[1] if path.startswith("/") else ""  # "//fhir": an empty first segment
    return {"fhir": "fhir", "idp": "fhir", "wado": "dicomweb", "wado-rs": "dicomweb"}.get(first)


def judge(listener: str, method: bytes, target: bytes, response: RawResponse) -> Verdict:
    if response.status == 0:
        return Verdict("none", False, (Problem("status", "no answer", response.error),))
    outcome = f"{response.status // 100}xx"
    parser = response.status == 400 and response.body == PARSER_REFUSAL
    status, body = response.status, _excerpt(response.body)
    problems = []
    if status >= 500:
        problems.append(Problem("status", str(status), body))
    elif 400 <= status < 500 and not parser:
        shape = shape_of(listener, method, target)
        if shape == "fhir" and not _is_operation_outcome(response):
            problems.append(Problem("shape", f"{status} without an OperationOutcome", body))
        if shape == "dicomweb" and not _WARNING.match(response.header("warning") or ""):
            problems.append(Problem("shape", f"{status} without a Warning header", body))
    return Verdict(outcome, parser, tuple(problems))


def _is_operation_outcome(response: RawResponse) -> bool:
    try:
        body = json.loads(response.body)
    except ValueError:
        return False
    return isinstance(body, dict) and body.get("resourceType") == "OperationOutcome"


def _excerpt(body: bytes, limit: int = 100) -> str:
    return repr(body[:limit])[2:-1]


class LogWatch:
    """New text in the role logs since the last look: a traceback is attributed to the request just made."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.offsets = {p: p.stat().st_size for p in self._logs()}

    def _logs(self) -> list[Path]:
        return sorted(self.log_dir.glob("*.log"))

    def tracebacks(self) -> list[Problem]:
        """One per new traceback: the role and the exception it ended with."""
        found = []
        for path in self._logs():
            start, size = self.offsets.get(path, 0), path.stat().st_size
            if size == start:
                continue
            with path.open("rb") as f:
                f.seek(start)
                text = f.read(size - start).decode("utf-8", "replace")
            self.offsets[path] = size
            found += [
                Problem("traceback", f"traceback in {path.stem}: {line.split(':')[0]}", line)
                for line in _exceptions(text)
            ]
        return found


def _exceptions(text: str) -> list[str]:
    """The final line of each traceback in ``text`` (``SomeError: message``)."""
    out = []
    for block in text.split("Traceback (most recent call last):")[1:]:
        lines = [ln for ln in block.splitlines() if ln and not ln.startswith((" ", "\t"))]
        out.append(lines[0][:200] if lines else "(traceback)")
    return out


def snapshot(dirs: list[Path]) -> dict[str, str]:
    """SHA-256 of every stored instance, and every staged file (``.incoming``) as ``staged:`` entries."""
    out = {}
    for root in dirs:
        for path in sorted(root.rglob("*")):
            if path.is_file() and (path.suffix == ".dcm" or ".incoming" in path.parts):
                key = str(path.relative_to(root.parent))
                out[key] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def snapshot_changes(before: dict[str, str], after: dict[str, str]) -> list[str]:
    changes = [f"stored instance changed: {k}" for k in before if k in after and after[k] != before[k]]
    changes += [f"stored instance gone: {k}" for k in before if k not in after]
    changes += [f"new file in the PACS storage: {k}" for k in after if k not in before]
    return changes
