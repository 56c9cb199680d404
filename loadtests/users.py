"""The actors of the XC-WADO load tests (imports ``locust``: load only inside Locust).

- :class:`ClinicianUser`: the three cross-border steps of docs/architecture.md from country B: identify
  the patient, ITI-67 with level-1 keys then level-2 selection, ITI-68 manifest, XC-WADO series
  retrieval verified instance by instance against the manifest.
- :class:`InstanceRetriever`, :class:`StudyRetriever`: XC-WADO (RAD-160) at instance and study level.
- :class:`DirectPacsUser`: the same retrievals straight to the PACS (RAD-107), the baseline.
- :class:`ViewerUser`, :class:`ViewerInstancesUser`: a zero-footprint viewer (OHIF) opening a series through
  RAD-160: the series' metadata, then every image 16 requests at a time, frame by frame or instance by
  instance.

Every URL comes from the state file (the gateway of B, the PACS of A) or lies under B's gateway
(attachment URLs are checked); request names are templates so UIDs do not explode the stats.
"""

from __future__ import annotations

import random
import ssl
import time
from collections.abc import Callable, Collection
from typing import Any, NoReturn, TypeVar
from urllib.parse import urlencode

import gevent.pool
from checks import FramesCheck, MultipartCheck, StreamCheck, hop_breakdown, metadata_verdict, server_timing
from hooks import Runtime
from locust import FastHttpUser, task
from locust.contrib.fasthttp import FAILURE_EXCEPTIONS, ResponseContextManager
from locust.env import Environment
from state import Country, FederationState, Patient, Study

from ncp.codes import SCT
from ncp.consumer.documents import DocumentEntry
from ncp.dicom.kos import read_manifest
from ncp.dicom.uids import is_valid_uid
from ncp.errors import NcpError
from ncp.model import Manifest

__all__ = [
    "ClinicianUser",
    "DirectPacsUser",
    "InstanceRetriever",
    "StudyRetriever",
    "ViewerInstancesUser",
    "ViewerUser",
    "XcwadoUser",
]

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
# What OHIF's DICOMweb client asks for a frame: any transfer syntax, uncompressed if it can (PS3.18 8.7.3).
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=*'
VIEWER_PARALLEL = 16  # a viewer's requests in flight while it fills a series (OHIF over HTTP/2)
_CHUNK = 256 * 1024
_TOKEN_MARGIN_S = 30.0

# Request names (URL templates); the smoke test and the summary group by them.
N_HCP_TOKEN = "idp /idp/token"
N_TREATMENT_TOKEN = "idp /idp/treatment"
N_IDENTIFY = "0 /fhir/Patient?identifier=[patient]"
N_QUERY = "1 /fhir/DocumentReference?patient.identifier=[patient]&anatomical-region&modality"
N_QUERY_NEXT = "1 /fhir/DocumentReference [next page]"
N_MANIFEST = "2 /fhir/Binary/[manifest]"
N_FLOW_SERIES = "3 /wado/.../studies/[study]/series/[series]"
N_XC_STUDY = "/wado/.../studies/[study]"
N_XC_INSTANCE = "/wado/.../studies/[study]/series/[series]/instances/[instance]"
N_PACS_STUDY = "/dicom-web/studies/[study]"
N_PACS_SERIES = "/dicom-web/studies/[study]/series/[series]"
N_PACS_INSTANCE = "/dicom-web/studies/[study]/series/[series]/instances/[instance]"
N_VIEW_METADATA = "v1 /wado/.../studies/[study]/series/[series]/metadata"
N_VIEW_FRAME = "v2 /wado/.../series/[series]/instances/[instance]/frames/1"
N_VIEW_INSTANCE = "v2 /wado/.../series/[series]/instances/[instance]"
N_VIEW_SERIES = "view series: metadata + every image"


C = TypeVar("C", bound=StreamCheck)


class FlowFailed(Exception):
    """A step failed (already recorded as a Locust failure): the rest of the flow is skipped."""


class XcwadoUser(FastHttpUser):
    """Shared plumbing: state, tokens, verified streaming retrievals and their metrics."""

    abstract = True
    host = "http://state-file.invalid"  # never used: every URL is absolute and comes from the state file
    network_timeout = 120.0
    connection_timeout = 10.0

    def __init__(self, environment: Environment) -> None:
        self.xc = Runtime.of(environment)
        self.state: FederationState = self.xc.federation()
        if self.state.security.ca_file:  # an https gateway of the test PKI
            cafile = self.state.security.ca_file
            self.ssl_context_factory = lambda: ssl.create_default_context(cafile=cafile)
        super().__init__(environment)
        self.visits = self.state.visits(self.xc.option("treatment"))
        runner = environment.runner
        seed = f"{self.xc.option('seed', 1)}/{getattr(runner, 'worker_index', 0)}/{self.xc.next_user()}"
        self.rng = random.Random(seed)
        self._hcp: dict[str, tuple[str, float]] = {}  # country of treatment -> (token, renew at)
        self._treatment: dict[tuple[str, str], tuple[str, float]] = {}

    def wait_time(self) -> float:
        return self.rng.uniform(0.0, 2.0 * float(self.xc.option("think_time", 0.5)))

    def context(self) -> dict[str, Any]:
        return {"user": type(self).__name__}

    # -- tokens (security.tokens of the state file) --------------------------------------------
    def hcp_headers(self, b: Country) -> dict[str, str]:
        """An HCP token of B's identity provider, renewed before it expires (state file ``security``)."""
        recipe = b.hcp_token
        if not self.state.security.enabled or recipe is None:
            return {}
        cached = self._hcp.get(b.code)
        if cached is None or cached[1] < time.monotonic():
            cached = self._token(N_HCP_TOKEN, recipe.url, dict(recipe.form), dict(recipe.headers))
            self._hcp[b.code] = cached
        return {"Authorization": f"Bearer {cached[0]}"}

    def treatment_headers(self, b: Country, patient: Patient, *, fresh: bool = False) -> dict[str, str]:
        """A treatment token bound to ``patient`` (the gateways refuse images of anyone else)."""
        recipe = b.treatment_token
        if not self.state.security.enabled or recipe is None:
            return {}
        key = (b.code, patient.fhir_identifier)
        cached = self._treatment.get(key)
        if fresh or cached is None or cached[1] < time.monotonic():
            hcp = self.hcp_headers(b).get("Authorization", "").removeprefix("Bearer ")
            form = {**recipe.form, "patient_id": patient.id, "patient_issuer": patient.issuer}
            headers = {k: v.replace("<hcp token>", hcp) for k, v in recipe.headers.items()}
            cached = self._token(N_TREATMENT_TOKEN, recipe.url, form, headers)
            self._treatment[key] = cached
        return {"Authorization": f"Bearer {cached[0]}"}

    def _token(self, name: str, url: str, form: dict[str, str], headers: dict[str, str]) -> tuple[str, float]:
        headers = {
            **headers,
            "Content-Type": "application/x-www-form-urlencoded",
            "Accept": "application/json",
        }
        with self.client.post(
            url, data=urlencode(form), headers=headers, name=name, catch_response=True
        ) as r:
            try:
                body = r.json() if r.status_code == 200 else {}
            except ValueError:
                body = {}
            token = body.get("access_token") if isinstance(body, dict) else None
            if not token:
                _fail(r, f"{r.status_code}: no access_token {_why(r)}")
            r.success()
        lifetime = float(body.get("expires_in", 300))
        return str(token), time.monotonic() + max(1.0, lifetime - _TOKEN_MARGIN_S)

    # -- verified retrieval ---------------------------------------------------------------------
    def retrieve(
        self,
        url: str,
        name: str,
        expected: Collection[str],
        headers: dict[str, str],
        *,
        extra_kos: bool = False,
    ) -> bool:
        """GET a multipart study/series/instance; success only when exactly ``expected`` arrived."""
        return self.streamed(
            url,
            name,
            {"Accept": DICOM_MULTIPART, **headers},
            MultipartCheck,
            lambda check: check.verdict(expected, extra_kos=extra_kos),
        )

    def streamed(
        self,
        url: str,
        name: str,
        headers: dict[str, str],
        make_check: Callable[[str], C],
        verdict: Callable[[C], str | None],
    ) -> bool:
        """GET a multipart answer, fed to its check as it arrives; success only when ``verdict`` finds
        nothing wrong. Locust's response time is the time to the *last* byte; time to first byte, bytes,
        instances and each hop's share go to the custom metrics."""
        started = time.perf_counter()
        request_headers = {"Accept-Encoding": "identity", **headers}
        with self.client.get(url, name=name, headers=request_headers, stream=True, catch_response=True) as r:
            ttfb_ms = (time.perf_counter() - started) * 1000
            if r.status_code != 200:
                r.failure(f"{r.status_code}: {_why(r)}")
                return False
            check = make_check(_header(r, "content-type") or "")
            try:
                for chunk in r.iter_content(_CHUNK, decode_content=False):
                    check.feed(chunk)
            except FAILURE_EXCEPTIONS as exc:  # a truncated body is a failure, never a smaller study
                check.error = f"body cut after {check.size} bytes: {type(exc).__name__}"
            total_ms = (time.perf_counter() - started) * 1000
            r.request_meta["response_time"] = total_ms
            r.request_meta["response_length"] = check.size
            why = verdict(check)
            if why is not None:
                r.failure(why)
                return False
            r.success()
        hops = hop_breakdown(ttfb_ms, server_timing(_header(r, "server-timing")))
        self.xc.metrics.retrieval(
            name, ttfb_ms=ttfb_ms, total_ms=total_ms, size=check.size, instances=check.instances, hops=hops
        )
        return True

    def xc_wado(
        self,
        b: Country,
        patient: Patient,
        rluid: str,
        study: str,
        series: str | None = None,
        sop: str | None = None,
    ) -> str:
        """RAD-160 URL at B's gateway (MADO Appendix XA); bare OIDs in the path."""
        hcid = self.state.countries[patient.country].home_community_id
        url = f"{b.gateway}/wado/homeCommunityId/{hcid}/RetrieveLocationUID/{rluid}/studies/{study}"
        if series:
            url += f"/series/{series}"
        if sop:
            url += f"/instances/{sop}"
        return url

    def pick(self) -> tuple[Country, Patient, Study]:
        return self.rng.choice(self.visits)


class ClinicianUser(XcwadoUser):
    """A health professional in B consulting a visiting patient of A: the whole three-step flow."""

    @task
    def consult(self) -> None:
        b, patient, study = self.pick()
        started = time.perf_counter()
        ok = False
        try:
            ok = self._flow(b, patient, study)
        except FlowFailed:
            ok = False
        self.xc.metrics.flow((time.perf_counter() - started) * 1000, ok)

    def _flow(self, b: Country, patient: Patient, study: Study) -> bool:
        self._identify(b, patient, self.hcp_headers(b))
        auth = self.treatment_headers(b, patient, fresh=True)  # a new treatment context per consultation
        entry = self._query(b, patient, study, auth)
        manifest = self._manifest(entry, study, self.state.countries[patient.country], auth)
        ok = True
        for series in manifest.series:
            rluid = series.retrieve_location_uid or ""
            url = self.xc_wado(b, patient, rluid, manifest.study_instance_uid, series.series_instance_uid)
            expected = [i.sop_instance_uid for i in series.instances]
            ok = self.retrieve(url, N_FLOW_SERIES, expected, auth) and ok
        return ok

    def _identify(self, b: Country, patient: Patient, auth: dict[str, str]) -> None:
        """Step 0, PDQm-style: exactly one Patient of A in a searchset Bundle."""
        url = f"{b.gateway}/fhir/Patient?" + urlencode({"identifier": patient.fhir_identifier})
        headers = {"Accept": "application/fhir+json", **auth}
        with self.client.get(url, name=N_IDENTIFY, headers=headers, catch_response=True) as r:
            bundle = _bundle(r)
            found = _entries(bundle, "Patient")
            if len(found) != 1:
                reason = "" if bundle else _why(r)
                _fail(r, f"{r.status_code}: expected one Patient, got {len(found)} {reason}")
            r.success()

    def _query(self, b: Country, patient: Patient, study: Study, auth: dict[str, str]) -> DocumentEntry:
        """Step 1, ITI-67 with level-1 keys (every page), then level-2 selection on procedure (MCWG 2.5)."""
        params = [("patient.identifier", patient.fhir_identifier), ("status", "current")]
        if study.anatomical_region:
            params.append(("anatomical-region", f"{SCT}|{study.anatomical_region}"))
        if study.modalities:
            params.append(("modality", study.modalities[0]))
        url: str | None = f"{b.gateway}/fhir/DocumentReference?{urlencode(params)}"
        headers = {"Accept": "application/fhir+json", **auth}
        name, entries = N_QUERY, []
        chosen: DocumentEntry | str = "no page"
        while url:
            with self.client.get(url, name=name, headers=headers, catch_response=True) as r:
                bundle = _bundle(r)
                if bundle is None:
                    _fail(r, f"{r.status_code}: {_why(r)}")
                entries += [DocumentEntry.from_resource(res) for res in _entries(bundle, "DocumentReference")]
                url = _next_link(r, bundle, b.gateway)
                if url is None:  # the last page answers for the selection made on all pages
                    chosen = _select(b, entries, study)
                    if isinstance(chosen, str):
                        _fail(r, chosen)
                r.success()
            name = N_QUERY_NEXT
        if isinstance(chosen, str):
            raise FlowFailed(chosen)
        return chosen

    def _manifest(self, entry: DocumentEntry, study: Study, a: Country, auth: dict[str, str]) -> Manifest:
        """Step 2, ITI-68: the KOS (``Accept: application/dicom``), parsed, checked against the catalogue."""
        headers = {"Accept": "application/dicom", **auth}
        with self.client.get(
            entry.urls["application/dicom"], name=N_MANIFEST, headers=headers, catch_response=True
        ) as r:
            if r.status_code != 200 or not r.content:
                _fail(r, f"{r.status_code}: {_why(r)}")
            try:
                manifest = read_manifest(bytes(r.content))
            except NcpError as exc:
                _fail(r, f"not a usable KOS: {exc.message}")
            wanted = {u for s in study.series for u in s.sop_instance_uids}
            # MADO also references its KIN (a KO series), which the state file's catalogue omits
            listed = {i.sop_instance_uid for s in manifest.series for i in s.instances}
            listed -= set(manifest.kin_sop_instance_uids)
            if manifest.study_instance_uid != study.study_instance_uid or listed != wanted:
                _fail(r, "the manifest does not reference the study's instances")
            for series in manifest.series:  # its UIDs go into URL paths: check them first (PS3.5 9.1)
                rluid = series.retrieve_location_uid or ""
                if not is_valid_uid(series.series_instance_uid) or rluid not in a.pacs:
                    _fail(
                        r,
                        f"series {series.series_instance_uid[:64]!r}: no Retrieve Location UID of {a.code}",
                    )
            r.success()
        return manifest


class InstanceRetriever(XcwadoUser):
    """Per-instance XC-WADO GETs across the catalogue (many small requests)."""

    @task
    def instance(self) -> None:
        b, patient, study = self.pick()
        series = self.rng.choice(study.series)
        sop = self.rng.choice(series.sop_instance_uids)
        try:
            auth = self.treatment_headers(b, patient)
        except FlowFailed:
            return
        url = self.xc_wado(
            b,
            patient,
            series.retrieve_location_uid,
            study.study_instance_uid,
            series.series_instance_uid,
            sop,
        )
        self.retrieve(url, N_XC_INSTANCE, [sop], auth)


class StudyRetriever(XcwadoUser):
    """Study-level XC-WADO GETs: one per Retrieve Location UID of the study (each PACS holds a part)."""

    @task
    def study(self) -> None:
        b, patient, study = self.pick()
        try:
            auth = self.treatment_headers(b, patient)
        except FlowFailed:
            return
        for rluid, series in study.by_location().items():
            expected = [u for s in series for u in s.sop_instance_uids]
            url = self.xc_wado(b, patient, rluid, study.study_instance_uid)
            self.retrieve(url, N_XC_STUDY, expected, auth, extra_kos=True)


class DirectPacsUser(XcwadoUser):
    """The baseline: the same retrievals sent straight to A's PACS (RAD-107), no gateway, no token."""

    def _study_url(self, patient: Patient, rluid: str, study: Study) -> str:
        return f"{self.state.pacs_base(patient.country, rluid)}studies/{study.study_instance_uid}"

    @task(2)
    def series(self) -> None:
        _, patient, study = self.pick()
        s = self.rng.choice(study.series)
        url = f"{self._study_url(patient, s.retrieve_location_uid, study)}/series/{s.series_instance_uid}"
        self.retrieve(url, N_PACS_SERIES, s.sop_instance_uids, {})

    @task(1)
    def instance(self) -> None:
        _, patient, study = self.pick()
        s = self.rng.choice(study.series)
        sop = self.rng.choice(s.sop_instance_uids)
        series_url = (
            f"{self._study_url(patient, s.retrieve_location_uid, study)}/series/{s.series_instance_uid}"
        )
        url = f"{series_url}/instances/{sop}"
        self.retrieve(url, N_PACS_INSTANCE, [sop], {})

    @task(1)
    def study(self) -> None:
        _, patient, study = self.pick()
        for rluid, series in study.by_location().items():
            expected = [u for s in series for u in s.sop_instance_uids]
            self.retrieve(self._study_url(patient, rluid, study), N_PACS_STUDY, expected, {}, extra_kos=True)


class ViewerUser(XcwadoUser):
    """A viewer opening one series through RAD-160 as OHIF does: the series' metadata, then frame 1 of every
    instance, ``VIEWER_PARALLEL`` requests in flight. Each request is checked (the metadata describes exactly
    the series' instances; each answer holds exactly one frame); the whole series, first request to last
    byte, is reported as ``view series`` (request type ``VIEW``), failed if any of its requests failed."""

    concurrency = VIEWER_PARALLEL  # connections of the user's pool, one per request in flight
    images = "frames"

    @task
    def open_series(self) -> None:
        b, patient, study = self.pick()
        series = self.rng.choice(study.series)
        started = time.perf_counter()
        try:
            auth = self.treatment_headers(b, patient)
        except FlowFailed:
            return
        base = self.xc_wado(
            b, patient, series.retrieve_location_uid, study.study_instance_uid, series.series_instance_uid
        )
        ok = self._metadata(f"{base}/metadata", series.sop_instance_uids, auth)
        if ok:
            pool = gevent.pool.Pool(VIEWER_PARALLEL)
            try:
                loads = [
                    pool.spawn(self._image, f"{base}/instances/{sop}", sop, auth)
                    for sop in series.sop_instance_uids
                ]
                pool.join()
            finally:  # a stopping user (GreenletExit) stops its requests in flight: none reports afterwards
                pool.kill()
            ok = all(load.value for load in loads)
        self.environment.events.request.fire(
            request_type="VIEW",
            name=N_VIEW_SERIES,
            response_time=(time.perf_counter() - started) * 1000,
            response_length=len(series.sop_instance_uids),
            exception=None if ok else FlowFailed("a request of the series failed"),
            context=self.context(),
        )

    def _metadata(self, url: str, expected: Collection[str], auth: dict[str, str]) -> bool:
        headers = {"Accept": "application/dicom+json", **auth}
        with self.client.get(url, name=N_VIEW_METADATA, headers=headers, catch_response=True) as r:
            try:
                body = r.json() if r.status_code == 200 else None
            except (ValueError, TypeError):
                body = None
            verdict = metadata_verdict(body, expected) if body is not None else f"{r.status_code}: {_why(r)}"
            if verdict is not None:
                r.failure(verdict)
                return False
            r.success()
        return True

    def _image(self, instance_url: str, sop: str, auth: dict[str, str]) -> bool:
        if self.images == "instances":
            return self.retrieve(instance_url, N_VIEW_INSTANCE, [sop], auth)
        headers = {"Accept": FRAME_ACCEPT, **auth}
        url = f"{instance_url}/frames/1"
        return self.streamed(url, N_VIEW_FRAME, headers, FramesCheck, lambda check: check.verdict(1))


class ViewerInstancesUser(ViewerUser):
    """:class:`ViewerUser` fetching whole instances (``application/dicom``) instead of frames, as a viewer
    configured without frame retrieval does."""

    images = "instances"


def _select(b: Country, entries: list[DocumentEntry], study: Study) -> DocumentEntry | str:
    """The one manifest of the study among the level-1 results, or why not."""
    chosen = [
        e
        for e in entries
        if e.kind == "manifest"
        and e.study_instance_uid == study.study_instance_uid
        and (not study.procedure or study.procedure in e.procedures)
    ]
    if len(chosen) != 1:
        return f"level-2 selection found {len(chosen)} manifests of the study among {len(entries)}"
    url = chosen[0].urls.get("application/dicom") or ""
    if not url.startswith(b.gateway + "/"):  # data never sends us to another host
        return f"attachment URL {url[:120]!r} is not under {b.gateway}"
    return chosen[0]


def _bundle(r: ResponseContextManager) -> dict[str, Any] | None:
    """The answer's FHIR Bundle (200, JSON), or None."""
    if r.status_code != 200:
        return None
    try:
        body = r.json()
    except (ValueError, TypeError):
        return None
    return body if isinstance(body, dict) and body.get("resourceType") == "Bundle" else None


def _entries(bundle: dict[str, Any] | None, kind: str) -> list[dict[str, Any]]:
    return [
        e["resource"]
        for e in (bundle or {}).get("entry", [])
        if isinstance(e, dict)
        and isinstance(e.get("resource"), dict)
        and e["resource"].get("resourceType") == kind
    ]


def _fail(r: ResponseContextManager, message: str) -> NoReturn:
    """Record the step as failed (inside its ``with`` block, so Locust reports it) and end the flow."""
    r.failure(message)  # type: ignore[no-untyped-call]
    raise FlowFailed(message)


def _next_link(r: ResponseContextManager, bundle: dict[str, Any] | None, gateway: str) -> str | None:
    """The Bundle's ``next`` page, only under our own gateway."""
    for link in (bundle or {}).get("link", []):
        if isinstance(link, dict) and link.get("relation") == "next":
            url = str(link.get("url", ""))
            if url.startswith("/"):
                return gateway + url
            if not url.startswith(gateway + "/"):
                _fail(r, f"next link {url[:120]!r} is not under {gateway}")
            return url
    return None


def _header(r: ResponseContextManager, name: str) -> str | None:
    """A header's value; repeated fields (one ``Server-Timing`` per hop) joined as RFC 9110 5.3 allows."""
    value = r.headers.get(name) if r.headers is not None else None
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return None if value is None else str(value)


def _why(r: ResponseContextManager) -> str:
    """A short reason: the Warning header (DICOMweb), OperationOutcome diagnostics, or the error."""
    warning = _header(r, "warning")
    if warning:
        return str(warning)
    error = getattr(r, "error", None)
    if error:
        return f"{type(error).__name__}: {error}"
    try:
        body = r.json()
        return "; ".join(str(i.get("diagnostics", "")) for i in body.get("issue", []))[:200]
    except (ValueError, AttributeError, TypeError):
        return (r.text or "")[:200]
