"""What the PACS routes share: settings + store, the target of a request, partial-content rules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request

from ncp.dicom.uids import validate_uid
from ncp.errors import NotFound, warning_header
from ncp.forwarded import public_base
from ncp.pacs.settings import PacsSettings
from ncp.pacs.store import InstanceStore, StoredInstance

__all__ = [
    "MAX_LISTED_UIDS",
    "PacsContext",
    "Resolved",
    "Target",
    "dicomweb_base",
    "header_safe",
    "instance_url",
]

MAX_LISTED_UIDS = 100  # a Warning header stays well under clients' header size limits (~16 KiB)


def header_safe(text: str) -> str:
    """Header values must be latin-1 and echoed input may not be: keep visible ASCII (RFC 9110 5.5)."""
    return "".join(c if " " <= c <= "~" else "?" for c in text)


def dicomweb_base(request: Request) -> str:
    """``http://host:port[/root]/dicom-web`` as this request reached us (for Retrieve URLs and each
    part's Content-Location), or the public base that the gateways in front of us name."""
    return public_base(request.headers) or str(request.base_url).rstrip("/") + "/dicom-web"


def instance_url(base: str, inst: StoredInstance) -> str:
    return f"{base}/studies/{inst.study_uid}/series/{inst.series_uid}/instances/{inst.sop_uid}"


@dataclass(frozen=True)
class Target:
    """A study, series or instance named by the request path; UIDs validated (PS3.5 9.1)."""

    study: str
    series: str | None = None
    sop: str | None = None

    @classmethod
    def from_request(cls, request: Request) -> Target:
        params = request.path_params
        series, sop = params.get("series"), params.get("sop")
        return cls(
            validate_uid(params["study"], "StudyInstanceUID"),
            None if series is None else validate_uid(series, "SeriesInstanceUID"),
            None if sop is None else validate_uid(sop, "SOPInstanceUID"),
        )

    def describe(self) -> str:
        if self.sop is not None:
            return f"instance {self.sop} of series {self.series} of study {self.study}"
        if self.series is not None:
            return f"series {self.series} of study {self.study}"
        return f"study {self.study}"


@dataclass(frozen=True)
class Resolved:
    """The target's instances: those we serve and those we do not (withheld or lost files)."""

    available: list[StoredInstance]
    missing: list[StoredInstance]


@dataclass(frozen=True)
class PacsContext:
    settings: PacsSettings
    store: InstanceStore

    def _partition(self, instances: Sequence[StoredInstance]) -> Resolved:
        available: list[StoredInstance] = []
        missing: list[StoredInstance] = []
        for inst in instances:
            lost = inst.sop_uid in self.settings.withhold or not self.store.path(inst).is_file()
            (missing if lost else available).append(inst)
        return Resolved(available, missing)

    def _lookup(self, target: Target) -> Resolved | None:
        instances = self.store.instances(target.study, target.series, target.sop)
        return self._partition(instances) if instances else None

    async def resolve(self, target: Target) -> Resolved:
        """Instances of ``target``; NotFound (404 + Warning) when none exists or none is available."""
        resolved = await run_in_threadpool(self._lookup, target)  # one worker-thread call per request
        if resolved is None:
            raise NotFound(f"{target.describe()} not found")
        if not resolved.available:
            raise NotFound(f"{target.describe()} not available: {_uid_list(resolved.missing)}")
        return resolved

    def partial(self, resolved: Resolved) -> tuple[int, dict[str, str]]:
        """200, or 206 + Warning naming the missing instances (PS3.18 Table 10.4.3-1)."""
        if not resolved.missing or self.settings.partial_as_ok:
            return 200, {}
        text = f"{len(resolved.missing)} instance(s) unavailable: {_uid_list(resolved.missing)}"
        return 206, {"Warning": warning_header(self.settings.agent, text)}


def _uid_list(instances: Sequence[StoredInstance]) -> str:
    shown = " ".join(i.sop_uid for i in instances[:MAX_LISTED_UIDS])
    more = len(instances) - MAX_LISTED_UIDS
    return f"{shown} and {more} more" if more > 0 else shown
