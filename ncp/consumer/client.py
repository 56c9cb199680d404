"""The Imaging Document Consumer: the three cross-border steps as a library (on httpx).

0. identify the patient (PDQm-style ``Patient?identifier=``),
1. find reports and manifests (ITI-67) with level-1 keys, select at level 2,
2. retrieve the KOS manifest (ITI-68, ``Accept: application/dicom``) and parse either encoding,
3. retrieve the selected series (or only the KIN key images) with XC-WADO (RAD-160) and verify
   that exactly the referenced instances arrived, byte for byte hashed.

The consumer only ever follows URLs under its own gateway's base: attachment URLs and ``next``
links from responses are checked against it first.
"""

from __future__ import annotations

import builtins
import functools
import hashlib
import io
import ssl
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import httpx
import pydicom

from ncp import fhirsearch
from ncp.codes import TYPE_MANIFEST, TYPE_REPORT
from ncp.consumer.documents import DocumentEntry
from ncp.dicom.kos import read_manifest
from ncp.dicom.multipart import MultipartDecoder
from ncp.errors import InvalidRequest, NcpError
from ncp.model import Manifest, ManifestSeries

__all__ = ["ConsumerError", "ImagingConsumer", "Retrieval", "SeriesRetrieval", "StepLog", "default_tls"]

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
Progress = Callable[[int, int], None]  # (bytes so far, instances so far)


class ConsumerError(NcpError):
    """A step failed: the answer's status and text are in the message."""


@dataclass(frozen=True)
class StepLog:
    step: str
    method: str
    url: str
    status: int
    seconds: float
    bytes: int
    detail: str = ""


@dataclass
class SeriesRetrieval:
    url: str
    status: int = 0
    warning: str | None = None
    expected: frozenset[str] = frozenset()
    received: dict[str, str] = field(default_factory=dict)  # SOP Instance UID -> SHA-256
    bytes: int = 0
    ttfb: float = 0.0
    seconds: float = 0.0
    error: str | None = None
    kept: builtins.bytes | None = None  # the instance's bytes, when asked to keep them (a KIN to read)

    @property
    def missing(self) -> frozenset[str]:
        return self.expected - self.received.keys()

    @property
    def unexpected(self) -> frozenset[str]:
        return frozenset(self.received.keys() - self.expected)

    @property
    def complete(self) -> bool:
        return self.error is None and self.status == 200 and not self.missing and not self.unexpected


@dataclass
class Retrieval:
    """The outcome of step 3: complete only when every referenced instance arrived, nothing else."""

    series: list[SeriesRetrieval]

    @property
    def complete(self) -> bool:
        return bool(self.series) and all(s.complete for s in self.series)

    @property
    def partial(self) -> bool:
        return any(s.status == 206 for s in self.series)

    @property
    def instances(self) -> int:
        return sum(len(s.received) for s in self.series)

    @property
    def expected(self) -> int:
        return sum(len(s.expected) for s in self.series)

    @property
    def bytes(self) -> int:
        return sum(s.bytes for s in self.series)

    def hashes(self) -> dict[str, str]:
        return {uid: digest for s in self.series for uid, digest in s.received.items()}


@functools.cache
def default_tls() -> ssl.SSLContext:
    """httpx's default verification context, built once per process and shared (it is only read): loading
    the CA bundle cost 30 ms of CPU for every client, 150 clients in one run of the scenario catalogue."""
    return httpx.create_ssl_context()


class ImagingConsumer:
    """A health professional's application in the country of treatment, talking to its own NCP."""

    def __init__(
        self,
        gateway: str,
        *,
        client: httpx.Client | None = None,
        headers: dict[str, str] | None = None,
        use_retrieve_url: bool = False,
    ) -> None:
        self.gateway = gateway.rstrip("/")
        self.client = client or httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0), verify=default_tls())
        self.headers = dict(headers or {})
        self.use_retrieve_url = use_retrieve_url
        self.log: list[StepLog] = []
        self._hcp_token = ""

    # -- credentials (the country's simulated identity provider) ------------------------------------
    def authenticate(
        self,
        subject: str = "dr-demo",
        role: str = "2211",
        organisation: str = "Hospital",
        facility: str = "Hospital",
    ) -> None:
        """Obtain an HCP token (ISCO-08 ``role``); it is sent on every later request."""
        form = {"subject": subject, "role": role, "organisation": organisation, "facility": facility}
        self._hcp_token = self._token("/idp/token", form, {})
        self.headers["Authorization"] = f"Bearer {self._hcp_token}"

    def open_treatment_context(self, issuer: str, patient_id: str, purpose_of_use: str = "TREATMENT") -> None:
        """After identification: a treatment token bound to this patient replaces the HCP token."""
        form = {"patient_issuer": issuer, "patient_id": patient_id, "purpose_of_use": purpose_of_use}
        token = self._token("/idp/treatment", form, {"Authorization": f"Bearer {self._hcp_token}"})
        self.headers["Authorization"] = f"Bearer {token}"

    def _token(self, path: str, form: dict[str, str], headers: dict[str, str]) -> str:
        response = self.client.post(self.gateway + path, data=form, headers=headers)
        if response.status_code != 200:
            raise ConsumerError(f"token from {path}: {response.status_code} {_diagnostics(response)}")
        return str(response.json()["access_token"])

    # -- step 0 ---------------------------------------------------------------------------------
    def identify(self, issuer: str, patient_id: str) -> dict[str, Any]:
        identifier = fhirsearch.token(f"urn:oid:{issuer}", patient_id)
        bundle = self._get_json("identify", "/fhir/Patient", {"identifier": identifier})
        entries: list[dict[str, Any]] = [
            e["resource"]
            for e in bundle.get("entry", [])
            if e.get("resource", {}).get("resourceType") == "Patient"
        ]
        if len(entries) != 1:
            raise ConsumerError(f"patient {issuer}|{patient_id}: expected one match, found {len(entries)}")
        return entries[0]

    # -- step 1 ---------------------------------------------------------------------------------
    def find(
        self,
        issuer: str,
        patient_id: str,
        *,
        kind: str | None = None,
        modality: str | None = None,
        region: str | None = None,
        accession: str | None = None,
        study_uid: str | None = None,
        extra: Sequence[tuple[str, str]] = (),
        page_size: int | None = None,
    ) -> list[DocumentEntry]:
        """ITI-67 with level-1 keys (or targeted keys); follows every ``next`` page."""
        params: list[tuple[str, str]] = [
            ("patient.identifier", fhirsearch.token(f"urn:oid:{issuer}", patient_id)),
            ("status", "current"),
        ]
        if kind:
            params.append(("type", {"manifest": TYPE_MANIFEST, "report": TYPE_REPORT}[kind].token()))
        if modality:
            params.append(("modality", modality))
        if region:
            params.append(("anatomical-region", region))
        if accession:
            params.append(("accession-number", accession))
        if study_uid:
            params.append(("study-instance-uid", study_uid))
        if page_size:
            params.append(("_count", str(page_size)))
        params.extend(extra)
        url: str | None = f"/fhir/DocumentReference?{urlencode(params)}"
        entries: list[DocumentEntry] = []
        while url:
            bundle = self._get_json("find", url)
            entries += [
                DocumentEntry.from_resource(e["resource"])
                for e in bundle.get("entry", [])
                if e.get("resource", {}).get("resourceType") == "DocumentReference"
            ]
            url = next((lk["url"] for lk in bundle.get("link", []) if lk.get("relation") == "next"), None)
        return entries

    @staticmethod
    def select(
        entries: Iterable[DocumentEntry], *, procedure: str | None = None, laterality: str | None = None
    ) -> list[DocumentEntry]:
        """Level-2 selection on the returned metadata (MCWG 2.5, 2.6)."""
        chosen = []
        for entry in entries:
            if procedure and not any(procedure.lower() in p.lower() for p in entry.procedures):
                continue
            if laterality and entry.laterality != laterality:
                continue
            chosen.append(entry)
        return chosen

    # -- step 2 ---------------------------------------------------------------------------------
    def retrieve_document(self, entry: DocumentEntry, accept: str) -> bytes:
        url = entry.urls.get(accept) or next(iter(entry.urls.values()), None)
        if url is None:
            raise ConsumerError(f"document {entry.id} has no attachment URL")
        response = self._get("retrieve", url, accept=accept)
        return response.content

    def retrieve_manifest(self, entry: DocumentEntry) -> Manifest:
        return read_manifest(self.retrieve_document(entry, "application/dicom"))

    # -- step 3 ---------------------------------------------------------------------------------
    def rad160_url(
        self, home_community_id: str, manifest: Manifest, series: ManifestSeries, sop: str | None = None
    ) -> str:
        if not series.retrieve_location_uid:
            raise ConsumerError(f"series {series.series_instance_uid} has no Retrieve Location UID")
        path = (
            f"{self.gateway}/wado/homeCommunityId/{home_community_id}/RetrieveLocationUID/"
            f"{series.retrieve_location_uid}/studies/{manifest.study_instance_uid}/series/{series.series_instance_uid}"
        )
        if sop:
            path += f"/instances/{sop}"
        if self.use_retrieve_url and series.retrieve_url:
            path += "?" + urlencode({"retrieveURL": series.retrieve_url})
        return path

    def retrieve_images(
        self,
        home_community_id: str,
        manifest: Manifest,
        *,
        series_uids: Iterable[str] | None = None,
        progress: Progress | None = None,
    ) -> Retrieval:
        """Retrieve whole series (all, or those selected) and verify them against the manifest."""
        wanted = set(series_uids) if series_uids is not None else None
        results = []
        for series in manifest.series:
            if wanted is not None and series.series_instance_uid not in wanted:
                continue
            expected = frozenset(i.sop_instance_uid for i in series.instances)
            results.append(
                self._retrieve(self.rad160_url(home_community_id, manifest, series), expected, progress)
            )
        return Retrieval(results)

    def retrieve_key_images(
        self, home_community_id: str, manifest: Manifest, *, progress: Progress | None = None
    ) -> Retrieval:
        """Only the KIN's key images: flagged in the manifest (MCWG) or read from the KIN (MADO)."""
        keys = set(manifest.key_image_uids())
        if not keys:
            for kin_uid in manifest.kin_sop_instance_uids:
                keys |= {
                    i.sop_instance_uid
                    for s in self._fetch_kin(home_community_id, manifest, kin_uid).series
                    for i in s.instances
                }
        if not keys:
            raise ConsumerError("the manifest references no key images (no KIN)")
        results = [
            self._retrieve(
                self.rad160_url(home_community_id, manifest, s, i.sop_instance_uid),
                frozenset({i.sop_instance_uid}),
                progress,
            )
            for s in manifest.series
            for i in s.instances
            if i.sop_instance_uid in keys
        ]
        return Retrieval(results)

    def _fetch_kin(self, home_community_id: str, manifest: Manifest, kin_uid: str) -> Manifest:
        series = next(s for s in manifest.series if any(i.sop_instance_uid == kin_uid for i in s.instances))
        got = self._retrieve(
            self.rad160_url(home_community_id, manifest, series, kin_uid),
            frozenset({kin_uid}),
            None,
            keep=True,
        )
        if not got.complete or got.kept is None:
            raise ConsumerError(f"KIN {kin_uid} could not be retrieved ({got.status} {got.error or ''})")
        return read_manifest(got.kept)

    def _retrieve(
        self, url: str, expected: frozenset[str], progress: Progress | None, *, keep: bool = False
    ) -> SeriesRetrieval:
        result = SeriesRetrieval(url=url, expected=expected)
        started = time.perf_counter()
        try:
            with self.client.stream(
                "GET", self._checked(url), headers={**self.headers, "Accept": DICOM_MULTIPART}
            ) as resp:
                result.ttfb = time.perf_counter() - started
                result.status = resp.status_code
                result.warning = resp.headers.get("warning")
                if resp.status_code not in (200, 206):
                    resp.read()
                    result.error = f"{resp.status_code}: {resp.headers.get('warning') or resp.text[:200]}"
                    return result
                decoder = MultipartDecoder(resp.headers.get("content-type", ""))
                for chunk in resp.iter_bytes():
                    result.bytes += len(chunk)
                    for part in decoder.feed(chunk):
                        self._accept_part(result, part.body, keep)
                        if progress:
                            progress(len(chunk), 1)
                decoder.close()
        except (httpx.HTTPError, NcpError) as exc:
            result.error = f"{type(exc).__name__}: {exc}"
        finally:
            result.seconds = time.perf_counter() - started
            self.log.append(
                StepLog("images", "GET", url, result.status, result.seconds, result.bytes, result.error or "")
            )
        return result

    @staticmethod
    def _accept_part(result: SeriesRetrieval, body: bytes, keep: bool) -> None:
        try:
            ds = pydicom.dcmread(io.BytesIO(body), stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
            uid = str(ds.SOPInstanceUID)
        except Exception as exc:  # a part that is not DICOM is a failed retrieval, not a crash
            result.error = f"a part is not a DICOM instance: {exc}"
            return
        result.received[uid] = hashlib.sha256(body).hexdigest()
        if keep:
            result.kept = body

    # -- plumbing -------------------------------------------------------------------------------
    def _checked(self, url: str) -> str:
        """Join relative paths to the gateway; absolute URLs must lie under it (data never redirects us)."""
        if url.startswith("/"):
            return self.gateway + url
        if not url.startswith(self.gateway + "/"):
            raise InvalidRequest(
                f"refusing to follow {url!r}: not under the configured gateway {self.gateway}"
            )
        return url

    def _get(
        self,
        step: str,
        url: str,
        params: dict[str, str] | None = None,
        *,
        accept: str = "application/fhir+json",
    ) -> httpx.Response:
        started = time.perf_counter()
        full = self._checked(url)
        response = self.client.get(full, params=params, headers={**self.headers, "Accept": accept})
        elapsed = time.perf_counter() - started
        self.log.append(
            StepLog(step, "GET", str(response.url), response.status_code, elapsed, len(response.content))
        )
        if response.status_code != 200:
            raise ConsumerError(
                f"{step}: {response.status_code} from {response.url}: {_diagnostics(response)}"
            )
        return response

    def _get_json(self, step: str, url: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        body: Any = self._get(step, url, params).json()
        if not isinstance(body, dict):
            raise ConsumerError(f"{step}: the answer is not a FHIR resource")
        return body

    def close(self) -> None:
        self.client.close()


def _diagnostics(response: httpx.Response) -> str:
    try:
        body = response.json()
        return "; ".join(i.get("diagnostics", "") for i in body.get("issue", [])) or response.text[:200]
    except ValueError:
        return response.headers.get("warning") or response.text[:200]
