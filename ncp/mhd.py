"""FHIR R4 resources of IHE MHD for imaging: DocumentReferences (MADO envelope), Patient, ITI-65 Bundle.

Shared by the synthetic publisher, the registry and the gateway. Sources: IHE ITI MHD (the
``IHE.MHD.Minimal.DocumentReference`` profile, ITI-65 2:3.65.4.1.2), the MADO IG's
``MadoDicomKosDocumentReference`` (``MHD-documentreference.fsh``) and search mapping (MADO Rev 1.1
Vol 3 Appendix A), the EU Health Data API codes for manifests and reports, MCWG metadata 2.x.

Choices where the sources disagree (the registry matches every variant when searching; docs/decisions.md):

* A document's uniqueId (``masterIdentifier``, repeated in ``identifier`` for MADO's invariant
  mado-docref-1) is an MHD uniqueId Identifier: ``use = usual``, ``system = urn:ietf:rfc:3986``,
  ``value = urn:oid:<uid>``; the MADO examples' ``urn:dicom:uid`` system stays for the study UID in
  ``context.related`` (MADO's study-instance-uid slice).
* Modality and anatomical region are written twice: as ``context.event`` codings (MADO Appendix A,
  XDS eventCodeList) and as the R5 cross-version ``modality``/``bodySite`` extensions (MADO IG profile).
* A DocumentReference has exactly one ``content`` (MHD Minimal ``content 1..1``: an XDS DocumentEntry has
  one mimeType, size and hash); a report is published as its PDF.
"""

from __future__ import annotations

import base64
import copy
import hashlib
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from ncp.codes import (
    ACQUISITION_MODALITIES,
    CATEGORY_MEDICAL_IMAGING,
    DCM,
    FORMAT_KOS,
    SCT,
    TYPE_MANIFEST,
    TYPE_REPORT,
    Code,
)
from ncp.dicom.uids import deterministic_uid
from ncp.errors import InvalidRequest
from ncp.model import PatientRecord, ReportRecord, StudyRecord

__all__ = [
    "ACCESSION_TYPE",
    "BODYSITE_EXTENSION",
    "DICOM_UID_SYSTEM",
    "FACILITY_TYPE",
    "FORMAT_MIME_SUFFICIENT",
    "HCID_EXTENSION",
    "IHE_FORMAT_CODES",
    "LATERALITY",
    "MHD_LIST_TYPES",
    "MINIMAL_PROVIDE_BUNDLE_PROFILE",
    "MINIMAL_SUBMISSION_SET_PROFILE",
    "MODALITY_EXTENSION",
    "ORDER_TYPE",
    "PRACTICE_SETTING",
    "RFC3986",
    "SOURCE_ID_EXTENSION",
    "STUDY_UID_TYPE",
    "V2_0203",
    "fhir_datetime",
    "manifest_document_reference",
    "patient_reference_id",
    "patient_resource",
    "provide_document_bundle",
    "report_document_reference",
    "unique_id",
    "validate_resource",
]

# -- systems, extension URLs, fixed codes ---------------------------------------------------------
RFC3986 = "urn:ietf:rfc:3986"
DICOM_UID_SYSTEM = "urn:dicom:uid"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
IHE_FORMAT_CODES = "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
MHD_LIST_TYPES = "https://profiles.ihe.net/ITI/MHD/CodeSystem/MHDlistTypes"
# MHD 2:3.67.4.2.2.1.6 (Target Communities Option): extension ihe-HomeCommunityId (identifier.fsh)
HCID_EXTENSION = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-HomeCommunityId"
SOURCE_ID_EXTENSION = "https://profiles.ihe.net/ITI/MHD/StructureDefinition/ihe-sourceId"
MINIMAL_PROVIDE_BUNDLE_PROFILE = (
    "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.ProvideBundle"
)
MINIMAL_SUBMISSION_SET_PROFILE = (
    "https://profiles.ihe.net/ITI/MHD/StructureDefinition/IHE.MHD.Minimal.SubmissionSet"
)
# MADO IG (MHD-documentreference.fsh): R5 cross-version extensions for modality and body site
MODALITY_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DocumentReference.modality"
BODYSITE_EXTENSION = "http://hl7.org/fhir/5.0/StructureDefinition/extension-DocumentReference.bodySite"

# context.related identifier types (MADO IG related slices; ITI TF-2x Z.9.1.2 CXi type codes)
STUDY_UID_TYPE = (
    Code("110180", DCM, "Study Instance UID"),
    Code("urn:ihe:iti:xds:2016:studyInstanceUID", RFC3986, "Study Instance UID"),
)
ACCESSION_TYPE = (
    Code("121022", DCM, "Accession Number"),
    Code("ACSN", V2_0203, "Accession ID"),
    Code("urn:ihe:iti:xds:2013:accession", RFC3986, "Accession Number"),
)
ORDER_TYPE = (
    Code("urn:ihe:iti:xds:2013:order", RFC3986, "Order Identifier"),
    Code("PLAC", V2_0203, "Placer Identifier"),
)
# MADO requires facilityType and practiceSetting (1..1): fixed plausible SNOMED CT values
FACILITY_TYPE = Code("22232009", SCT, "Hospital")
PRACTICE_SETTING = Code("394914008", SCT, "Radiology")
# MCWG 2.6 laterality as an extra context.event coding
LATERALITY = {
    "L": Code("7771000", SCT, "Left"),
    "R": Code("24028007", SCT, "Right"),
    "B": Code("51440002", SCT, "Right and left"),
}
# IHE format code: the MIME type alone says what the content is (PDF, FHIR document Bundle)
FORMAT_MIME_SUFFICIENT = Code(
    "urn:ihe:iti:xds:2017:mimeTypeSufficient", IHE_FORMAT_CODES, "mimeType Sufficient"
)
_LANGUAGE = "en"


# -- small helpers --------------------------------------------------------------------------------
def fhir_datetime(date: str, time: str = "") -> str:
    """DICOM DA (+ TM) -> FHIR dateTime; a time needs a zone in FHIR, DICOM has none: taken as UTC."""
    day = f"{date[:4]}-{date[4:6]}-{date[6:8]}"
    digits = "".join(ch for ch in time.split(".")[0] if ch.isdigit())
    if not digits:
        return day
    hh, mm, ss = (digits + "000000")[:2], (digits + "000000")[2:4], (digits + "000000")[4:6]
    return f"{day}T{hh}:{mm}:{ss}Z"


def patient_reference_id(patient: PatientRecord) -> str:
    """The Patient resource id: stable for (issuer, id), valid FHIR id syntax whatever the national ID."""
    digest = hashlib.sha1(f"{patient.issuer}|{patient.id}".encode()).hexdigest()
    return f"pat-{digest[:24]}"


def _cc(*codes: Code) -> dict[str, Any]:
    return {"coding": [c.coding() for c in codes]}


def _subject(patient: PatientRecord) -> dict[str, Any]:
    return {
        "reference": f"Patient/{patient_reference_id(patient)}",
        "type": "Patient",
        "identifier": {"system": f"urn:oid:{patient.issuer}", "value": patient.id},
        "display": f"{patient.family.upper()} {patient.given}",
    }


def _uid_identifier(uid: str) -> dict[str, Any]:
    """A DICOM UID in ``context.related`` (MADO's study-instance-uid slice: system urn:dicom:uid)."""
    return {"system": DICOM_UID_SYSTEM, "value": f"urn:oid:{uid}"}


def unique_id(uid: str) -> dict[str, Any]:
    """A document's uniqueId as MHD writes it (``IHE.MHD.UniqueIdIdentifier``): use usual, RFC 3986 URI."""
    return {"use": "usual", "system": RFC3986, "value": f"urn:oid:{uid}"}


def _related(study: StudyRecord) -> list[dict[str, Any]]:
    """context.related: the study, each accession (+issuer), each placer order (+issuer) (MCWG 6.3)."""
    related: list[dict[str, Any]] = [
        {
            "type": "ImagingStudy",
            "identifier": {"type": _cc(*STUDY_UID_TYPE), **_uid_identifier(study.study_instance_uid)},
        }
    ]
    accessions = dict.fromkeys((r.accession_number, r.accession_issuer) for r in study.requests)
    orders = dict.fromkeys((r.placer_order_number, r.placer_issuer) for r in study.requests)
    for value, issuer in accessions:
        identifier = {"type": _cc(*ACCESSION_TYPE), "system": f"urn:oid:{issuer}", "value": value}
        related.append({"type": "ServiceRequest", "identifier": identifier})
    for value, issuer in orders:
        identifier = {"type": _cc(*ORDER_TYPE), "system": f"urn:oid:{issuer}", "value": value}
        related.append({"type": "ServiceRequest", "identifier": identifier})
    return related


def _modality_code(modality: str) -> Code:
    return Code(modality, DCM, ACQUISITION_MODALITIES.get(modality, modality))


def _events(study: StudyRecord) -> list[dict[str, Any]]:
    """context.event: modalities (DCM), coarse region (SCT), procedure codes, laterality (MADO App. A)."""
    events = [_cc(_modality_code(m)) for m in study.modalities]
    events.append(_cc(study.anatomical_region))
    procedures = dict.fromkeys([study.procedure, *(r.procedure for r in study.requests)])
    events.extend(_cc(p) for p in procedures)
    if study.laterality in LATERALITY:
        events.append(_cc(LATERALITY[study.laterality]))
    return events


def _context(study: StudyRecord) -> dict[str, Any]:
    return {
        "event": _events(study),
        "period": {"start": fhir_datetime(study.date, study.time)},
        "facilityType": _cc(FACILITY_TYPE),
        "practiceSetting": _cc(PRACTICE_SETTING),
        "related": _related(study),
    }


def _imaging_extensions(study: StudyRecord, home_community_id: str) -> list[dict[str, Any]]:
    extensions: list[dict[str, Any]] = [
        {"url": MODALITY_EXTENSION, "valueCodeableConcept": _cc(_modality_code(m))} for m in study.modalities
    ]
    concept: dict[str, Any] = {"url": "concept", "valueCodeableConcept": _cc(study.anatomical_region)}
    extensions.append({"url": BODYSITE_EXTENSION, "extension": [concept]})
    extensions.append({"url": HCID_EXTENSION, "valueOid": f"urn:oid:{home_community_id}"})
    return extensions


def _attachment(
    content_type: str, size: int, sha1_b64: str, url: str, creation: str, title: str
) -> dict[str, Any]:
    return {
        "contentType": content_type,
        "language": _LANGUAGE,
        "url": url,
        "size": size,
        "hash": sha1_b64,
        "title": title,
        "creation": creation,
    }


# -- builders -------------------------------------------------------------------------------------
def manifest_document_reference(
    study: StudyRecord,
    *,
    doc_id: str,
    size: int,
    sha1_b64: str,
    url: str,
    home_community_id: str,
    creation: str,
) -> dict[str, Any]:
    """The DocumentReference of a study's KOS manifest (MADO IG MadoDicomKosDocumentReference): its
    uniqueId is the KOS SOP Instance UID."""
    if not study.manifest_sop_instance_uid:
        raise ValueError(f"study {study.study_instance_uid}: manifest_sop_instance_uid is not set")
    uid = unique_id(study.manifest_sop_instance_uid)
    return {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "extension": _imaging_extensions(study, home_community_id),
        "masterIdentifier": uid,
        "identifier": [uid],  # MADO invariant mado-docref-1; "official" is MHD's entryUUID slice
        "status": "current",
        "type": _cc(TYPE_MANIFEST),
        "category": [_cc(CATEGORY_MEDICAL_IMAGING)],
        "subject": _subject(study.patient),
        "date": creation,
        "author": [{"display": study.institution}],
        "description": f"Imaging study manifest: {study.description}",
        "content": [
            {
                "attachment": _attachment(
                    "application/dicom", size, sha1_b64, url, creation, "KOS imaging study manifest"
                ),
                "format": FORMAT_KOS.coding(),
            }
        ],
        "context": _context(study),
    }


def report_document_reference(
    report: ReportRecord,
    *,
    doc_id: str,
    content: tuple[str, int, str, str],
    home_community_id: str,
    creation: str,
) -> dict[str, Any]:
    """An imaging report (LOINC 85430-7, EU Health Data API) in ONE representation (MHD Minimal
    ``content 1..1``), ``content`` = (content type, size, SHA-1 base64, url). MHD Minimal forbids
    ``docStatus`` (0..0): whether the report is final is in the document itself."""
    content_type, size, sha1, url = content
    study = report.study
    master = unique_id(deterministic_uid("imaging-report", report.id))
    return {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "extension": _imaging_extensions(study, home_community_id),
        "masterIdentifier": master,
        "identifier": [master],
        "status": "current",
        "type": _cc(TYPE_REPORT),
        "category": [_cc(CATEGORY_MEDICAL_IMAGING)],
        "subject": _subject(study.patient),
        "date": report.issued,
        "author": [{"display": report.author}],
        "description": f"Imaging report: {study.procedure.display}",
        "content": [
            {
                "attachment": _attachment(content_type, size, sha1, url, creation, "Imaging report"),
                "format": FORMAT_MIME_SUFFICIENT.coding(),
            }
        ],
        "context": _context(study),
    }


def patient_resource(patient: PatientRecord) -> dict[str, Any]:
    """Patient with the national identifier (``urn:oid:<issuer>``), as PDQm returns it."""
    gender = {"M": "male", "F": "female", "O": "other"}[patient.sex]
    b = patient.birth_date
    return {
        "resourceType": "Patient",
        "id": patient_reference_id(patient),
        "identifier": [
            {
                "use": "official",
                "type": _cc(Code("NI", V2_0203, "National unique individual identifier")),
                "system": f"urn:oid:{patient.issuer}",
                "value": patient.id,
            }
        ],
        "name": [{"family": patient.family, "given": [patient.given]}],
        "gender": gender,
        "birthDate": f"{b[:4]}-{b[4:6]}-{b[6:8]}",
        "address": [{"country": patient.country}],
    }


def provide_document_bundle(
    patient: PatientRecord,
    documents: Sequence[tuple[dict[str, Any], Sequence[tuple[str, bytes]]]],
    *,
    source_oid: str,
    submitted: str | None = None,
) -> dict[str, Any]:
    """An ITI-65 transaction Bundle (MHD 2:3.65.4.1.2): SubmissionSet, Patient, DocumentReferences, Binaries.

    ``documents`` = (DocumentReference, [(content type, bytes), ...]); each content of a
    DocumentReference is paired with the representation of the same content type, its
    ``attachment.url`` pointed at that Binary's ``urn:uuid:`` fullUrl, and size and hash set from the
    bytes (MHD: "shall populate accurate .hash and .size"). The Patient is an update-as-create
    (``PUT Patient/{id}``) so the DocumentReference's ``Patient/{id}`` reference resolves.
    """
    pid = patient_reference_id(patient)
    doc_entries: list[dict[str, Any]] = []
    binary_entries: list[dict[str, Any]] = []
    for doc, representations in documents:
        resource = copy.deepcopy(doc)
        binaries = _pair_contents(resource, representations)
        doc_url = _urn()
        doc_entries.append(_entry(doc_url, resource, "POST", "DocumentReference"))
        binary_entries.extend(binaries)
    submission_set = _submission_set(pid, [e["fullUrl"] for e in doc_entries], source_oid, submitted)
    return {
        "resourceType": "Bundle",
        "meta": {"profile": [MINIMAL_PROVIDE_BUNDLE_PROFILE]},
        "type": "transaction",
        "entry": [
            _entry(_urn(), submission_set, "POST", "List"),
            _entry(_urn(), patient_resource(patient), "PUT", f"Patient/{pid}"),
            *doc_entries,
            *binary_entries,
        ],
    }


def _urn() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def _entry(full_url: str, resource: dict[str, Any], method: str, url: str) -> dict[str, Any]:
    return {"fullUrl": full_url, "resource": resource, "request": {"method": method, "url": url}}


def _pair_contents(doc: dict[str, Any], representations: Sequence[tuple[str, bytes]]) -> list[dict[str, Any]]:
    unused = list(representations)
    binaries = []
    for content in doc.get("content", []):
        attachment = content.setdefault("attachment", {})
        content_type = attachment.get("contentType")
        match = next((r for r in unused if r[0] == content_type), None)
        if match is None:
            raise ValueError(
                f"DocumentReference {doc.get('id')}: no bytes given for content type {content_type!r}"
            )
        unused.remove(match)
        data = match[1]
        url = _urn()
        attachment.update(
            url=url, size=len(data), hash=base64.b64encode(hashlib.sha1(data).digest()).decode()
        )
        binary = {
            "resourceType": "Binary",
            "contentType": content_type,
            "data": base64.b64encode(data).decode(),
        }
        binaries.append(_entry(url, binary, "POST", "Binary"))
    if unused:
        raise ValueError(f"DocumentReference {doc.get('id')}: no content for {[r[0] for r in unused]}")
    return binaries


def _submission_set(pid: str, doc_urls: list[str], source_oid: str, submitted: str | None) -> dict[str, Any]:
    when = submitted or datetime.now(UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")
    return {
        "resourceType": "List",
        "meta": {"profile": [MINIMAL_SUBMISSION_SET_PROFILE]},
        "extension": [{"url": SOURCE_ID_EXTENSION, "valueIdentifier": {"value": f"urn:oid:{source_oid}"}}],
        "identifier": [{"use": "usual", "system": RFC3986, "value": f"urn:oid:2.25.{uuid.uuid4().int}"}],
        "status": "current",
        "mode": "working",
        "code": {"coding": [{"system": MHD_LIST_TYPES, "code": "submissionset"}]},
        "subject": {"reference": f"Patient/{pid}"},
        "date": when,
        "entry": [{"item": {"reference": url}} for url in doc_urls],
    }


# -- validation -----------------------------------------------------------------------------------
def validate_resource(d: dict[str, Any]) -> None:
    """Validate a FHIR R4 resource (any type, nested resources included) with ``fhir.resources.R4B``.

    Raises :class:`ncp.errors.InvalidRequest` carrying pydantic's error text.
    """
    from fhir.resources.R4B import get_fhir_model_class  # heavy import: only where validation is used
    from pydantic import ValidationError

    resource_type = d.get("resourceType") if isinstance(d, dict) else None
    if not isinstance(resource_type, str):
        raise InvalidRequest("not a FHIR resource: resourceType is missing")
    if _depth(d) > _MAX_DEPTH:  # the R4B models recurse: a hostile nesting must not become a 500
        raise InvalidRequest(f"{resource_type} is nested more than {_MAX_DEPTH} levels deep")
    try:
        model = get_fhir_model_class(resource_type)
    except (ValueError, KeyError):
        raise InvalidRequest(f"unknown FHIR R4 resourceType {resource_type!r}") from None
    try:
        model.model_validate(d)
    except ValidationError as exc:
        raise InvalidRequest(f"invalid FHIR R4 {resource_type}: {_short_errors(exc)}") from None
    except RecursionError:
        raise InvalidRequest(f"{resource_type} is nested too deeply to validate") from None


_MAX_DEPTH = 64


def _depth(value: Any) -> int:
    """JSON nesting depth, iteratively (no recursion on untrusted input)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, level = stack.pop()
        deepest = max(deepest, level)
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else ()
        stack.extend((child, level + 1) for child in children if isinstance(child, (dict, list)))
    return deepest


def _short_errors(exc: Any, limit: int = 5) -> str:
    errors = exc.errors(include_url=False, include_input=False)
    parts = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in errors[:limit]]
    more = f" (+{len(errors) - limit} more)" if len(errors) > limit else ""
    return "; ".join(parts) + more
