"""XDS on FHIR: DocumentEntry -> DocumentReference, and ITI-67 parameters -> ITI-18 stored queries.

The mapping follows MHD's table of DocumentEntry attributes (ITI TF-3 4.5.1.1, "XDS on FHIR"): uniqueId
-> masterIdentifier, entryUUID -> identifier (official), availabilityStatus -> status, typeCode -> type,
classCode -> category, confidentialityCode -> securityLabel, creationTime -> attachment.creation,
eventCodeList -> context.event, serviceStartTime -> context.period.start, referenceIdList ->
context.related, homeCommunityId -> the ihe-HomeCommunityId extension. The MADO extensions (modality,
bodySite) are derived from the event codes, so the result has the shape the MHD registry (``ncp.mhd``)
serves.

A search is pushed down to ITI-18 as far as XDS can express it exactly (patient, status, event, type
codes; targeted keys with FindDocumentsByReferenceId, ITI TF-2a 3.18.4.1.2.3.7.14), and every
parameter is then evaluated on the mapped DocumentReferences with the MHD registry's own search keys
(``ncp.registry.index``), so the answer is the one the MHD registry would give.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass
from typing import Any

from ncp.codes import ANATOMICAL_REGIONS, DCM, SCT, Code
from ncp.errors import InvalidRequest
from ncp.mhd import (
    ACCESSION_TYPE,
    BODYSITE_EXTENSION,
    DICOM_UID_SYSTEM,
    HCID_EXTENSION,
    IHE_FORMAT_CODES,
    MODALITY_EXTENSION,
    ORDER_TYPE,
    RFC3986,
    STUDY_UID_TYPE,
    fhir_datetime,
)
from ncp.registry.index import DateRange, document_dates, document_tokens
from ncp.registry.store import DateAlt, DocumentQuery, TokenAlt
from ncp.registry.xds import iti18
from ncp.registry.xds.ebrim import ACCESSION, APPROVED, ORDER, STUDY_INSTANCE_UID, Coded, DocumentEntry, cxi
from ncp.registry.xds.imaging import SCHEME_OIDS

__all__ = [
    "DEPRECATED",
    "StoredQueryPlan",
    "document_reference",
    "fhir_id",
    "matches",
    "patient_cx",
    "patient_id",
    "patient_resource",
    "plan_query",
]

DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
_STATUSES = {"current": APPROVED, "superseded": DEPRECATED}  # XDS has no entered-in-error entries
_SYSTEMS = {
    **{oid: system for system, oid in SCHEME_OIDS.items()},
    "1.3.6.1.4.1.19376.1.2.3": IHE_FORMAT_CODES,
    "2.16.840.1.113883.5.25": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality",
}
_PUSHED_CODES = {  # ITI-67 parameter -> stored query parameter
    "modality": "$XDSDocumentEntryEventCodeList",
    "anatomical-region": "$XDSDocumentEntryEventCodeList",
    "event": "$XDSDocumentEntryEventCodeList",
    "type": "$XDSDocumentEntryTypeCode",
    "category": "$XDSDocumentEntryClassCode",
}
_IMPLIED_SYSTEM = {"modality": DCM, "anatomical-region": SCT}  # a bare code is pushed only with its system
_PLAIN = re.compile(r"^[A-Za-z0-9.:_-]{1,64}$")  # values pushed into a stored query; others filter locally
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_LANGUAGE = "en"


# -- ids ---------------------------------------------------------------------------------------------
def fhir_id(entry: DocumentEntry) -> str:
    """The DocumentReference (and Binary) id: the entryUUID without ``urn:uuid:``."""
    return entry.entry_uuid.removeprefix("urn:uuid:")


def entry_uuid(resource_id: str) -> str | None:
    """The entryUUID a FHIR id stands for; None when it is not one (then nothing has it)."""
    return f"urn:uuid:{resource_id}" if _UUID.fullmatch(resource_id) else None


def patient_id(issuer: str, value: str) -> str:
    """The Patient resource id, as the MHD registry makes it (``ncp.mhd.patient_reference_id``)."""
    return f"pat-{hashlib.sha1(f'{issuer}|{value}'.encode()).hexdigest()[:24]}"


def patient_cx(system: str | None, value: str | None) -> str:
    """``urn:oid:{issuer}|{id}`` -> the XDS patient id ``id^^^&issuer&ISO`` (ITI TF-3 Table 4.2.3.1.7-2)."""
    issuer = (system or "").removeprefix("urn:oid:")
    if not system or system == issuer or not issuer or not value or any(c in value for c in "^&~\\|"):
        raise InvalidRequest(
            "this registry is XDS: a document or patient search names the patient as urn:oid:<issuer>|<id>"
        )
    return f"{value}^^^&{issuer}&ISO"


def _patient_of(cx: str) -> tuple[str, str]:
    value, _, rest = cx.partition("^^^&")
    return rest.partition("&")[0], value


# -- DocumentEntry -> FHIR ---------------------------------------------------------------------------
def _coding(coded: Coded) -> dict[str, Any]:
    system = _SYSTEMS.get(coded.scheme, coded.scheme if ":" in coded.scheme else f"urn:oid:{coded.scheme}")
    return Code(coded.code, system, coded.display).coding()


def _cc(*codes: Coded) -> dict[str, Any]:
    return {"coding": [_coding(c) for c in codes]}


def _instant(dtm: str) -> str | None:
    """An XDS DTM (UTC, ITI TF-3 Table 4.2.3.1.7-2) as a FHIR dateTime at its precision; None when it is
    not one (a registry's bad value is left out rather than failing the client's search)."""
    if not dtm.isdigit() or len(dtm) not in (4, 6, 8, 10, 12, 14):
        return None
    if len(dtm) >= 8:
        return fhir_datetime(dtm[:8], dtm[8:])
    return dtm[:4] + (f"-{dtm[4:6]}" if len(dtm) == 6 else "")


def _base64_sha1(hex_digest: str) -> str | None:
    try:
        return base64.b64encode(bytes.fromhex(hex_digest)).decode() if hex_digest else None
    except ValueError:
        return None


def _uid_value(uid: str) -> str:
    return f"urn:oid:{uid}" if uid[:1].isdigit() else uid


def _related(reference_ids: tuple[str, ...]) -> list[dict[str, Any]]:
    """referenceIdList CXi values (``value^^^&issuer&ISO^type``) as MADO's context.related slices."""
    related = []
    for cx in reference_ids:
        fields = cx.split("^")
        value, issuer = fields[0], [*fields[3].split("&"), ""][1] if len(fields) > 3 else ""
        kind = fields[4] if len(fields) > 4 else ""
        if kind == STUDY_INSTANCE_UID:
            identifier = {
                "type": {"coding": [c.coding() for c in STUDY_UID_TYPE]},
                "system": DICOM_UID_SYSTEM,
                "value": f"urn:oid:{value}",
            }
            related.append({"type": "ImagingStudy", "identifier": identifier})
            continue
        types = ACCESSION_TYPE if kind == ACCESSION else ORDER_TYPE if kind == ORDER else ()
        identifier = {"system": f"urn:oid:{issuer}", "value": value} if issuer else {"value": value}
        if types:
            identifier["type"] = {"coding": [c.coding() for c in types]}
        related.append({"type": "ServiceRequest", "identifier": identifier})
    return related


def _imaging_extensions(entry: DocumentEntry) -> list[dict[str, Any]]:
    modalities = [c for c in entry.event_codes if _coding(c)["system"] == DCM]
    regions = [c for c in entry.event_codes if _coding(c)["system"] == SCT and c.code in ANATOMICAL_REGIONS]
    extensions: list[dict[str, Any]] = [
        {"url": MODALITY_EXTENSION, "valueCodeableConcept": _cc(m)} for m in modalities
    ]
    extensions += [
        {"url": BODYSITE_EXTENSION, "extension": [{"url": "concept", "valueCodeableConcept": _cc(r)}]}
        for r in regions
    ]
    if entry.home_community_id:
        extensions.append({"url": HCID_EXTENSION, "valueOid": entry.home_community_id})
    return extensions


def _subject(entry: DocumentEntry) -> dict[str, Any]:
    issuer, value = _patient_of(entry.patient_id)
    subject = {
        "reference": f"Patient/{patient_id(issuer, value)}",
        "type": "Patient",
        "identifier": {"system": f"urn:oid:{issuer}", "value": value},
    }
    family, given = _demographics(entry.source_patient_info).get("name", ("", ""))
    if family or given:
        subject["display"] = f"{family.upper()} {given}".strip()
    return subject


def document_reference(entry: DocumentEntry, base: str) -> dict[str, Any]:
    """The DocumentReference of one DocumentEntry; its attachment is ``{base}/Binary/{id}``."""
    doc_id = fhir_id(entry)
    master = {"use": "usual", "system": RFC3986, "value": _uid_value(entry.unique_id)}
    creation = _instant(entry.creation_time)
    attachment: dict[str, Any] = {
        "contentType": entry.mime_type,
        "language": entry.language_code or _LANGUAGE,
        "url": f"{base}/Binary/{doc_id}",
        "size": entry.size,
        "hash": _base64_sha1(entry.hash),
        "title": entry.title,
        "creation": creation,
    }
    context: dict[str, Any] = {
        "event": [_cc(c) for c in entry.event_codes],
        "facilityType": _cc(entry.healthcare_facility_type),
        "practiceSetting": _cc(entry.practice_setting),
        "related": _related(entry.reference_ids),
    }
    if start := _instant(entry.service_start_time):
        context["period"] = {"start": start}
    resource = {
        "resourceType": "DocumentReference",
        "id": doc_id,
        "extension": _imaging_extensions(entry),
        "masterIdentifier": master,
        "identifier": [master, {"use": "official", "system": RFC3986, "value": entry.entry_uuid}],
        "status": "superseded" if entry.status == DEPRECATED else "current",
        "type": _cc(entry.type_code),
        "category": [_cc(entry.class_code)],
        "subject": _subject(entry),
        "date": creation,
        "description": entry.title,
        "securityLabel": [_cc(entry.confidentiality_code)],
        "content": [{"attachment": _present(attachment), "format": _coding(entry.format_code)}],
        "context": context,
    }
    return _present(resource)


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """FHIR JSON has no nulls: an attribute XDS did not give is left out."""
    return {k: v for k, v in values.items() if v is not None}


def _demographics(info: tuple[str, ...]) -> dict[str, tuple[str, str]]:
    """sourcePatientInfo ``PID-5|Family^Given``, ``PID-7|YYYYMMDD``, ``PID-8|F`` (ITI TF-3 4.2.3.2.23)."""
    out = {}
    for line in info:
        field, _, value = line.partition("|")
        if field == "PID-5":
            family, _, given = value.partition("^")
            out["name"] = (family, given.split("^")[0])
        elif field in ("PID-7", "PID-8"):
            out[field] = (value, "")
    return out


def patient_resource(issuer: str, value: str, entries: list[DocumentEntry]) -> dict[str, Any]:
    """A PDQm Patient from what XDS knows: the patient id, and demographics from the newest entry's
    sourcePatientInfo (the registry keeps no patient records of its own)."""
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": patient_id(issuer, value),
        "identifier": [{"use": "official", "system": f"urn:oid:{issuer}", "value": value}],
    }
    newest = max(entries, key=lambda e: e.creation_time, default=None)
    known = _demographics(newest.source_patient_info) if newest else {}
    if "name" in known:
        family, given = known["name"]
        resource["name"] = [{"family": family, "given": [given]}]
    gender = {"M": "male", "F": "female", "O": "other"}.get(known.get("PID-8", ("", ""))[0])
    if gender:
        resource["gender"] = gender
    birth = known.get("PID-7", ("", ""))[0]
    if len(birth) == 8 and birth.isdigit():
        resource["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:]}"
    return resource


# -- ITI-67 -> ITI-18 --------------------------------------------------------------------------------
@dataclass(frozen=True)
class StoredQueryPlan:
    """The stored query that selects a superset of what the search asks (None: nothing can match)."""

    query_id: str
    params: list[tuple[str, str | list[str]]]


def plan_query(query: DocumentQuery) -> StoredQueryPlan | None:
    if len(query.patient_identifiers) != 1 or len(query.patient_identifiers[0]) != 1 or query.patient_ids:
        raise InvalidRequest(
            "this registry is XDS: ITI-67 names exactly one patient, "
            "by patient.identifier=urn:oid:<issuer>|<id>"
        )
    (alt,) = query.patient_identifiers[0]
    statuses = set(_STATUSES)
    for values in query.statuses:
        statuses &= set(values)
    if not statuses:
        return None
    params: list[tuple[str, str | list[str]]] = [
        ("$XDSDocumentEntryPatientId", patient_cx(alt.system, alt.code)),
        ("$XDSDocumentEntryStatus", sorted(_STATUSES[s] for s in statuses)),
    ]
    for clause in query.tokens:
        pushed = _pushed_codes(clause.param, clause.alternatives)
        if pushed:
            params.append((_PUSHED_CODES[clause.param], pushed))
    references = next((r for c in query.tokens if (r := _reference_ids(c.param, c.alternatives))), None)
    if references:
        params.append(("$XDSDocumentEntryReferenceIdList", references))
        return StoredQueryPlan(iti18.FIND_DOCUMENTS_BY_REFERENCE_ID, params)
    return StoredQueryPlan(iti18.FIND_DOCUMENTS, params)


def _pushed_codes(param: str, alternatives: tuple[TokenAlt, ...]) -> list[str] | None:
    """``code^^scheme`` values of a code clause, when XDS can say exactly the same (else None)."""
    if param not in _PUSHED_CODES:
        return None
    out = []
    for alt in alternatives:
        system = alt.system if alt.system is not None else _IMPLIED_SYSTEM.get(param)
        scheme = SCHEME_OIDS.get(system or "")
        if scheme is None or alt.code is None or not _PLAIN.fullmatch(alt.code):
            return None
        if param in _IMPLIED_SYSTEM and system != _IMPLIED_SYSTEM[param]:
            return None
        out.append(f"{alt.code}^^{scheme}")
    return out


def _reference_ids(param: str, alternatives: tuple[TokenAlt, ...]) -> list[str] | None:
    """CXi values of a targeted-key clause (MADO Vol 3 App. A), when every alternative is exact."""
    out = []
    for alt in alternatives:
        if alt.code is None or not _PLAIN.fullmatch(alt.code):
            return None
        if param == "study-instance-uid" and alt.system in (None, RFC3986):
            out.append(cxi(alt.code, STUDY_INSTANCE_UID))
        elif param == "accession-number" and alt.system and alt.system.startswith("urn:oid:"):
            out.append(cxi(alt.code, ACCESSION, alt.system.removeprefix("urn:oid:")))
        else:
            return None
    return out or None


# -- the search, evaluated on the mapped resources -------------------------------------------------------
def matches(resource: dict[str, Any], query: DocumentQuery) -> bool:
    """Whether a DocumentReference satisfies every clause, with the MHD registry's semantics
    (``ncp.registry.store``: clauses ANDed, alternatives ORed)."""
    subject = resource.get("subject", {})
    ident = subject.get("identifier", {})
    patient_tokens = [("", str(ident.get("system", "")), str(ident.get("value", "")))]
    tokens = document_tokens(resource)
    dates = document_dates(resource)
    return (
        all(subject.get("reference", "").rsplit("/", 1)[-1] in ids for ids in query.patient_ids)
        and all(any(_token(a, patient_tokens, "") for a in alts) for alts in query.patient_identifiers)
        and all(resource.get("status") in values for values in query.statuses)
        and all(resource.get("id") in ids for ids in query.ids)
        and all(any(_token(a, tokens, c.param) for a in c.alternatives) for c in query.tokens)
        and all(
            any(_date(a, r) for a in c.alternatives for p, r in dates if p == c.param) for c in query.dates
        )
    )


def _token(alt: TokenAlt, tokens: list[tuple[str, str, str]], param: str) -> bool:
    for p, system, code in tokens:
        if p != param:
            continue
        if alt.code is None and system == (alt.system or ""):
            return True
        if alt.code is not None and code == alt.code and alt.system in (None, system):
            return True
    return False


def _date(alt: DateAlt, held: DateRange) -> bool:
    """FHIR R4 search 3.1.1.5.6 prefixes over half-open ranges, as ``ncp.registry.store._date_sql``."""
    p, lo, hi = alt.range, held.lo, held.hi
    inside = lo >= p.lo and hi <= p.hi
    return {
        "eq": inside,
        "ne": not inside,
        "gt": hi > p.hi,
        "lt": lo < p.lo,
        "ge": hi > p.hi or inside,
        "le": lo < p.lo or inside,
        "sa": lo >= p.hi,
        "eb": hi <= p.lo,
        "ap": lo < p.hi and hi > p.lo,
    }[alt.prefix]
