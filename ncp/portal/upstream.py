"""The portal's only upstream: its own NCP's consumer-facing listener, over HTTP, like any consumer.

IdP (``/idp/token``, ``/idp/treatment``), PDQm ITI-78, MHD ITI-67/68 and XC-WADO RAD-160. A refusal
keeps its status (401, 403, 404, ...) and the gateway's reason, so the portal can say what happened.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from ncp import fhirsearch
from ncp.codes import TYPE_MANIFEST, TYPE_REPORT
from ncp.consumer.documents import DocumentEntry
from ncp.dicom.multipart import MultipartDecoder
from ncp.errors import (
    Forbidden,
    Gone,
    InvalidRequest,
    NcpError,
    NotAcceptable,
    NotFound,
    Unauthorized,
    UpstreamError,
)
from ncp.model import Manifest, ManifestSeries

__all__ = ["DICOM_MULTIPART", "Fetched", "Gateway", "scrub"]

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
# addresses a reason may carry (a PACS URL, host:port): a browser is never told the NCP's inside
_ADDRESS = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://\S+|\b[\w.-]+:\d{2,5}\b")
_BY_STATUS: dict[int, type[NcpError]] = {
    400: InvalidRequest,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    406: NotAcceptable,
    410: Gone,
}


@dataclass(frozen=True)
class Fetched:
    body: bytes
    media_type: str
    seconds: float


class Gateway:
    """Async calls to ``base`` (this NCP's gateway listener); ``bearer`` is the session's token."""

    def __init__(self, base: str, client: httpx.AsyncClient) -> None:
        self.base = base.rstrip("/")
        self.client = client

    # -- identity provider -------------------------------------------------------------------------
    async def hcp_token(self, subject: str, organisation: str, role: str) -> tuple[str, float]:
        form = {"subject": subject, "organisation": organisation, "role": role, "facility": "Hospital"}
        return await self._token("/idp/token", form, None)

    async def treatment_token(self, hcp: str, issuer: str, patient_id: str) -> tuple[str, float]:
        form = {"patient_issuer": issuer, "patient_id": patient_id, "purpose_of_use": "TREATMENT"}
        return await self._token("/idp/treatment", form, hcp)

    async def _token(self, path: str, form: dict[str, str], bearer: str | None) -> tuple[str, float]:
        response = await self.client.post(self.base + path, data=form, headers=_auth(bearer))
        _raise_for(response)
        body = response.json()
        return str(body["access_token"]), float(body.get("expires_in", 300))

    # -- ITI-78, ITI-67, ITI-68 --------------------------------------------------------------------
    async def identify(self, bearer: str, issuer: str, patient_id: str) -> dict[str, Any] | None:
        identifier = fhirsearch.token(f"urn:oid:{issuer}", patient_id)
        bundle = await self._json(bearer, "/fhir/Patient?" + urlencode({"identifier": identifier}))
        found = [e["resource"] for e in bundle.get("entry", []) if _type(e) == "Patient"]
        return found[0] if len(found) == 1 else None

    async def documents(
        self,
        bearer: str,
        issuer: str,
        patient_id: str,
        *,
        modality: str = "",
        region: str = "",
        study_uid: str = "",
    ) -> list[DocumentEntry]:
        """ITI-67 with the level-1 keys (or the targeted Study Instance UID), every page; manifests and
        reports only."""
        params = [
            ("patient.identifier", fhirsearch.token(f"urn:oid:{issuer}", patient_id)),
            ("status", "current"),
            ("type", f"{TYPE_MANIFEST.token()},{TYPE_REPORT.token()}"),
        ]
        keys = (("modality", modality), ("anatomical-region", region), ("study-instance-uid", study_uid))
        params += [(k, v) for k, v in keys if v]
        url: str | None = "/fhir/DocumentReference?" + urlencode(params)
        entries: list[DocumentEntry] = []
        while url:
            bundle = await self._json(bearer, url)
            entries += [
                DocumentEntry.from_resource(e["resource"])
                for e in bundle.get("entry", [])
                if _type(e) == "DocumentReference"
            ]
            url = next((lk["url"] for lk in bundle.get("link", []) if lk.get("relation") == "next"), None)
        return entries

    async def document(self, bearer: str, entry: DocumentEntry, accept: str) -> Fetched:
        url = entry.urls.get(accept) or next(iter(entry.urls.values()), "")
        started = time.perf_counter()
        response = await self.client.get(self._under(url), headers={**_auth(bearer), "Accept": accept})
        _raise_for(response)
        media = response.headers.get("content-type", accept).split(";")[0].strip()
        return Fetched(response.content, media, time.perf_counter() - started)

    # -- RAD-160 -----------------------------------------------------------------------------------
    def rad160(self, hcid: str, manifest: Manifest, series: ManifestSeries, sop: str | None = None) -> str:
        if not series.retrieve_location_uid:
            raise NotFound(f"series {series.series_instance_uid} has no Retrieve Location UID")
        url = (
            f"{self.base}/wado/homeCommunityId/{hcid}/RetrieveLocationUID/{series.retrieve_location_uid}"
            f"/studies/{manifest.study_instance_uid}/series/{series.series_instance_uid}"
        )
        return url + (f"/instances/{sop}" if sop else "")

    async def instance(self, bearer: str, url: str) -> Fetched:
        """One native instance (RAD-160 with ``multipart/related; type=application/dicom``)."""
        started = time.perf_counter()
        headers = {**_auth(bearer), "Accept": DICOM_MULTIPART}
        async with self.client.stream("GET", url, headers=headers) as response:
            if response.status_code != 200:
                await response.aread()
                _raise_for(response)
            decoder = MultipartDecoder(response.headers.get("content-type", ""))
            parts = [p.body async for chunk in response.aiter_bytes() for p in decoder.feed(chunk)]
            decoder.close()
        if len(parts) != 1:
            raise UpstreamError(f"expected one instance, the gateway answered {len(parts)} parts")
        return Fetched(parts[0], "application/dicom", time.perf_counter() - started)

    async def rendered(self, bearer: str, url: str, window: tuple[float, float] | None) -> Fetched:
        """RAD-160 ``/rendered`` from the source (PS3.18 10.4.1.1.3): the source server option."""
        query = {"window": f"{window[0]:g},{window[1]:g}"} if window else {}
        started = time.perf_counter()
        response = await self.client.get(
            url + "/rendered", params=query, headers={**_auth(bearer), "Accept": "image/png"}
        )
        _raise_for(response)
        media = response.headers.get("content-type", "image/png").split(";")[0].strip()
        return Fetched(response.content, media, time.perf_counter() - started)

    async def stream(
        self, bearer: str, url: str, query: str, accept: str
    ) -> tuple[httpx.Response, AsyncIterator[bytes]]:
        """A RAD-160 answer to relay as it arrives (the WIA facade's WADO-RS): status and headers first."""
        headers = {**_auth(bearer), "Accept": accept}
        request = self.client.build_request(
            "GET", self._under(url) + (f"?{query}" if query else ""), headers=headers
        )
        response = await self.client.send(request, stream=True)
        if response.status_code not in (200, 206):
            await response.aread()
            await response.aclose()
            _raise_for(response)

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return response, body()

    # -- plumbing ----------------------------------------------------------------------------------
    async def _json(self, bearer: str, url: str) -> dict[str, Any]:
        response = await self.client.get(
            self._under(url), headers={**_auth(bearer), "Accept": "application/fhir+json"}
        )
        _raise_for(response)
        body = response.json()
        if not isinstance(body, dict):
            raise UpstreamError("the gateway's answer is not a FHIR resource")
        return body

    def _under(self, url: str) -> str:
        """Relative to the gateway, or under it: an address from data never chooses where we go."""
        if url.startswith("/"):
            return self.base + url
        if not url.startswith(self.base + "/"):
            raise UpstreamError("a link in the gateway's answer points outside this NCP")
        return url


def _auth(bearer: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {bearer}"} if bearer else {}


def _type(entry: dict[str, Any]) -> Any:
    return entry.get("resource", {}).get("resourceType")


def _raise_for(response: httpx.Response) -> None:
    if response.status_code in (200, 206):
        return
    error = _BY_STATUS.get(response.status_code, UpstreamError)
    raise error(f"{response.status_code}: {_reason(response)}")


def _reason(response: httpx.Response) -> str:
    """The gateway's own words: OperationOutcome diagnostics, else the DICOMweb ``Warning`` text."""
    try:
        body = response.json()
        issues = body.get("issue", []) if isinstance(body, dict) else []
        text = "; ".join(str(i.get("diagnostics", "")) for i in issues if i.get("diagnostics"))
    except ValueError:
        text = ""
    warning = response.headers.get("warning", "")
    if not text and warning.count('"') >= 2:
        text = warning.split('"', 1)[1].rsplit('"', 1)[0]
    return scrub(text or response.reason_phrase or "refused")


def scrub(text: str) -> str:
    return _ADDRESS.sub("[address withheld]", text)
