"""Load a country's synthetic catalogue into its roles through the real transactions.

Images go to the PACS with STOW-RS (grouped per Retrieve Location UID), documents to an MHD
registry with ITI-65 and to an XDS registry with ITI-41 Provide and Register (MTOM). Publication
variants (MCWG 2.17 / 3.2): variant A publishes the manifest together with the validated report;
variant B publishes the manifest at acquisition, before the report exists, so only the manifest is
found. A team's own XDS registry (topology ``url``) holds its own data and is published into only when its
topology entry says ``seed = true``.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import httpx

from ncp.dicom.kos import build_kin, build_manifest, to_part10
from ncp.dicom.multipart import Part, encode_multipart, multipart_content_type, new_boundary
from ncp.dicom.uids import deterministic_uid
from ncp.errors import UpstreamError
from ncp.mhd import manifest_document_reference, provide_document_bundle, report_document_reference
from ncp.model import PatientRecord, ReportRecord, StudyRecord
from ncp.registry.xds import iti41
from ncp.registry.xds.ebrim import SUCCESS
from ncp.registry.xds.imaging import manifest_entry, report_entry, submission_set
from ncp.security.pki import FederationPki
from ncp.soapcore import SoapFault, mtom_message, parse_message
from ncp.synth import CountryData, render_pdf, synthesize
from ncp.topology import Country, Endpoints, Topology

__all__ = ["Published", "manifest_document", "publish_country", "seed_federation"]

Encoding = Literal["MADO", "MCWG"]
_STOW_BATCH = 16


@dataclass(frozen=True)
class Published:
    data: CountryData
    encoding: Encoding
    manifests: dict[str, bytes]  # study UID -> KOS Part 10
    reports: frozenset[str]  # study UIDs whose report was published


async def seed_federation(
    topology: Topology, endpoints: Endpoints, *, encoding: Encoding | None = None
) -> dict[str, Published]:
    out = {}
    async with httpx.AsyncClient(timeout=120.0) as client:
        for code, country in topology.countries.items():
            if country.external:  # an NCP under test holds its own data (the same synthetic catalogue)
                continue
            out[code] = await publish_country(client, topology, code, endpoints, encoding=encoding)
    return out


async def publish_country(
    client: httpx.AsyncClient,
    topology: Topology,
    code: str,
    endpoints: Endpoints,
    *,
    encoding: Encoding | None = None,
) -> Published:
    country = topology.country(code)
    ep = endpoints[code]
    data = synthesize(topology, code, retrieve_urls=ep.pacs)
    encoding = encoding or topology.synth.manifest_encoding
    manifests: dict[str, bytes] = {}
    reports: set[str] = set()
    for study in data.studies:
        await _stow_study(client, data, study)
        manifests[study.study_instance_uid] = to_part10(build_manifest(study, encoding=encoding))
    for patient in data.patients:
        by_registry: dict[str, list[tuple[StudyRecord, ReportRecord | None]]] = {}
        for study in (s for s in data.studies if s.patient == patient):
            report = data.report(study) if study.publication == "A" else None
            by_registry.setdefault(country.registry_of(study.series[0].retrieve_location_uid), []).append(
                (study, report)
            )
            if report is not None:
                reports.add(study.study_instance_uid)
        for reg_id, studies in by_registry.items():
            registry = next(r for r in country.registries if r.id == reg_id)
            if registry.external and not registry.seed:
                continue  # a team's own XDS registry holds its own data, unless its topology says seed
            if registry.kind in ("xds", "xca"):  # ITI-41 to the repository the plan names (xca: the region's)
                repository = ep.xds[reg_id].repository
                async with _client_for(client, topology, code, repository) as http:
                    await _provide_and_register(http, repository, country, patient, studies, manifests)
                continue
            docs = [
                manifest_document(country, study, manifests[study.study_instance_uid]) for study, _ in studies
            ]
            docs += [_report_doc(country, report) for _, report in studies if report is not None]
            bundle = provide_document_bundle(patient, docs, source_oid=country.home_community_id)
            await _post(client, ep.registries[reg_id], bundle)
    return Published(data, encoding, manifests, frozenset(reports))


@asynccontextmanager
async def _client_for(
    client: httpx.AsyncClient, topology: Topology, code: str, url: str
) -> AsyncIterator[httpx.AsyncClient]:
    """``client``, or for an https registry (a team's own) one with the country's NCP client certificate
    and the federation CA of the topology's ``pki_dir``, as our facade reaches it."""
    if not url.startswith("https://") or topology.pki_dir is None:
        yield client
        return
    tls = FederationPki.load(topology.pki_dir).client_ssl_context(code)
    async with httpx.AsyncClient(timeout=client.timeout, verify=tls) as secure:
        yield secure


async def _provide_and_register(
    client: httpx.AsyncClient,
    repository: str,
    country: Country,
    patient: PatientRecord,
    studies: list[tuple[StudyRecord, ReportRecord | None]],
    manifests: dict[str, bytes],
) -> None:
    """An XDS registry: one ITI-41 Provide and Register (MTOM) per patient, each manifest as an XDS-I.b
    DocumentEntry with the MCWG keys (``ncp.registry.xds.imaging``) and, variant A, its report as PDF."""
    documents = []
    for study, report in studies:
        kos = manifests[study.study_instance_uid]
        documents.append(
            (
                manifest_entry(
                    study,
                    entry_uuid=_entry_uuid(study.manifest_sop_instance_uid),
                    creation_time=study.date + study.time[:6],
                ),
                kos,
            )
        )
        if report is not None:
            uid = deterministic_uid("imaging-report", report.id)
            entry = report_entry(
                report,
                entry_uuid=_entry_uuid(uid),
                unique_id=uid,
                creation_time="".join(ch for ch in report.issued if ch.isdigit())[:14],
            )
            documents.append((entry, render_pdf(report)))
    key = "|".join(entry.unique_id for entry, _ in documents)
    ss = submission_set(
        patient,
        entry_uuid=_entry_uuid(f"ss|{key}"),
        unique_id=deterministic_uid("ss", key),
        source_id=country.home_community_id,
        submission_time=datetime.now(UTC).strftime("%Y%m%d%H%M%S"),
    )
    body, parts = iti41.provide_and_register_request(ss, documents)
    message = mtom_message(body, action=iti41.ACTION, attachments=parts, to=repository)
    response = await client.post(
        repository, content=message.body, headers={"Content-Type": message.content_type}
    )
    try:
        answer = parse_message(
            response.headers.get("content-type", ""), response.content, max_part_bytes=len(response.content)
        )
    except SoapFault as fault:
        raise UpstreamError(f"ITI-41 to {repository} answered {response.status_code}: {fault}") from None
    if answer.body.get("status") != SUCCESS:
        raise UpstreamError(f"ITI-41 to {repository} was refused: {response.text[:300]}")


def _entry_uuid(unique_id: str) -> str:
    """A stable entryUUID per document (ITI TF-3 4.2.3.2.8), so a seeded federation's ids are reproducible."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_OID, unique_id)}"


def manifest_document(
    country: Country, study: StudyRecord, kos: bytes
) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    doc = manifest_document_reference(
        study,
        doc_id=_doc_id("m", study.study_instance_uid),
        size=len(kos),
        sha1_b64=_sha1(kos),
        url="urn:placeholder",
        home_community_id=country.home_community_id,
        creation=_creation(study),
    )
    return doc, [("application/dicom", kos)]


def _report_doc(country: Country, report: Any) -> tuple[dict[str, Any], list[tuple[str, bytes]]]:
    """The report as its PDF: one content per DocumentReference (MHD Minimal; docs/decisions.md)."""
    pdf = render_pdf(report)
    doc = report_document_reference(
        report,
        doc_id=_doc_id("r", report.study.study_instance_uid),
        content=("application/pdf", len(pdf), _sha1(pdf), "urn:placeholder"),
        home_community_id=country.home_community_id,
        creation=_creation(report.study),
    )
    return doc, [("application/pdf", pdf)]


async def _stow_study(client: httpx.AsyncClient, data: CountryData, study: StudyRecord) -> None:
    by_pacs: dict[str, list[bytes]] = {}
    url_of = {s.retrieve_location_uid: s.retrieve_url for s in study.series}
    batch_owner = study.series[0].retrieve_location_uid
    for series, body in data.instance_files(study):
        pending = by_pacs.setdefault(series.retrieve_location_uid, [])
        pending.append(body)
        if len(pending) >= _STOW_BATCH:
            await _stow(client, url_of[series.retrieve_location_uid], pending)
            pending.clear()
    if study.key_images:
        by_pacs.setdefault(batch_owner, []).append(to_part10(build_kin(study)))
    for rluid, pending in by_pacs.items():
        if pending:
            await _stow(client, url_of[rluid], pending)


async def _stow(client: httpx.AsyncClient, base: str, bodies: list[bytes]) -> None:
    boundary = new_boundary()

    async def parts() -> AsyncIterator[Part]:
        for body in bodies:
            yield Part.from_bytes(body, "application/dicom")

    response = await client.post(
        f"{base.rstrip('/')}/studies",
        content=encode_multipart(parts(), boundary),
        headers={"Content-Type": multipart_content_type("application/dicom", boundary)},
    )
    if response.status_code != 200:
        raise UpstreamError(f"STOW-RS to {base} answered {response.status_code}: {response.text[:300]}")


async def _post(client: httpx.AsyncClient, fhir_base: str, bundle: dict[str, Any]) -> None:
    response = await client.post(fhir_base, json=bundle, headers={"Content-Type": "application/fhir+json"})
    if response.status_code not in (200, 201):
        raise UpstreamError(f"ITI-65 to {fhir_base} answered {response.status_code}: {response.text[:300]}")


def _doc_id(prefix: str, uid: str) -> str:
    return f"{prefix}{hashlib.sha1(uid.encode()).hexdigest()[:20]}"


def _sha1(data: bytes) -> str:
    return base64.b64encode(hashlib.sha1(data).digest()).decode()


def _creation(study: StudyRecord) -> str:
    d, t = study.date, study.time
    return f"{d[:4]}-{d[4:6]}-{d[6:8]}T{t[:2]}:{t[2:4]}:{t[4:6]}Z"
