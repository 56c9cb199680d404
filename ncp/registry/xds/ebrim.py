"""ebRIM 3.0 metadata of XDS.b: DocumentEntry and SubmissionSet builders and readers.

Attribute encodings per IHE ITI TF-3 4.2.3 (Slot, Classification, ExternalIdentifier) and the
referenceIdList (CXi values), which carries the MCWG targeted keys: accession
(``urn:ihe:iti:xds:2013:accession``), order (``urn:ihe:iti:xds:2013:order``) and Study Instance UID
(``urn:ihe:iti:xds:2016:studyInstanceUID``). The level-1 keys, modality and anatomical region, are
eventCodeList codes (MADO Vol 3 App. A). Registry responses and XdsError are ncp.soapcore's (shared with
XDS-I.b at the PACS), re-exported here.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from lxml import etree

from ncp.soapcore import FAILURE, PARTIAL, RS, SUCCESS, XdsError, append_errors, registry_response

__all__ = [
    "ACCESSION",
    "APPROVED",
    "FAILURE",
    "ORDER",
    "PARTIAL",
    "RIM",
    "RS",
    "STUDY_INSTANCE_UID",
    "SUCCESS",
    "Coded",
    "DocumentEntry",
    "Submission",
    "SubmissionSet",
    "XdsError",
    "append_errors",
    "cxi",
    "document_entry_element",
    "object_ref_element",
    "read_document_entry",
    "read_submission",
    "registry_response",
    "rim",
    "submission_elements",
]

RIM = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0"
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
HAS_MEMBER = "urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember"
CLASSIFICATION_NODE = "urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ClassificationNode"
# referenceIdList CXi identifier types (ITI TF-3 Table 4.2.3.1.7-2, MADO App. A)
ACCESSION = "urn:ihe:iti:xds:2013:accession"
ORDER = "urn:ihe:iti:xds:2013:order"
STUDY_INSTANCE_UID = "urn:ihe:iti:xds:2016:studyInstanceUID"
REFERENCE_ID_LIST = "urn:ihe:iti:xds:2013:referenceIdList"

# ITI TF-3 Table 4.2.5-1 (DocumentEntry) and 4.2.5-2 (SubmissionSet) UUIDs
STABLE_DOCUMENT_ENTRY = "urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1"
SUBMISSION_SET_NODE = "urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"
_CLASS_CODE = "urn:uuid:41a5887f-8865-4c09-adf7-e362475b143a"
_CONFIDENTIALITY = "urn:uuid:f4f85eac-e6cb-4883-b524-f2705394840f"
_EVENT_CODE = "urn:uuid:2c6b8cb7-8b2a-4051-b291-b1ae6a575ef4"
_FORMAT_CODE = "urn:uuid:a09d5840-386c-46f2-b5ad-9c3699a4309d"
_FACILITY_TYPE = "urn:uuid:f33fb8ac-18af-42cc-ae0e-ed0b0bdb91e1"
_PRACTICE_SETTING = "urn:uuid:cccf5598-8b07-4b77-a05e-ae952c785ead"
_TYPE_CODE = "urn:uuid:f0306f51-975f-434e-a61c-c59651d33983"
_DE_PATIENT_ID = "urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427"
_DE_UNIQUE_ID = "urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab"
_SS_CONTENT_TYPE = "urn:uuid:aa543740-bdda-424e-8c96-df4873be8500"
_SS_PATIENT_ID = "urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446"
_SS_SOURCE_ID = "urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832"
_SS_UNIQUE_ID = "urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8"


def rim(local: str) -> str:
    return f"{{{RIM}}}{local}"


@dataclass(frozen=True)
class Coded:
    """A coded attribute: code, coding scheme (OID or URI) and display name."""

    code: str
    scheme: str
    display: str


@dataclass(frozen=True)
class DocumentEntry:
    entry_uuid: str
    unique_id: str
    patient_id: str  # CX: id^^^&oid&ISO
    mime_type: str
    title: str
    creation_time: str  # DTM, UTC
    class_code: Coded
    type_code: Coded
    format_code: Coded
    confidentiality_code: Coded
    healthcare_facility_type: Coded
    practice_setting: Coded
    language_code: str = "en"
    source_patient_id: str = ""
    source_patient_info: tuple[str, ...] = ()  # PID-5 name, PID-7 birth date, PID-8 sex (ITI TF-3 4.2.3.2.23)
    service_start_time: str = ""
    event_codes: tuple[Coded, ...] = ()
    reference_ids: tuple[str, ...] = ()  # CXi values
    hash: str = ""  # SHA-1, hex
    size: int | None = None
    repository_unique_id: str = ""
    home_community_id: str = ""  # urn:oid:...
    status: str = APPROVED


@dataclass(frozen=True)
class SubmissionSet:
    entry_uuid: str
    unique_id: str
    source_id: str
    patient_id: str
    submission_time: str
    content_type_code: Coded
    title: str = ""


@dataclass(frozen=True)
class Submission:
    """A SubmitObjectsRequest: its set, its entries (ids made UUIDs) and each entry's original id."""

    submission_set: SubmissionSet
    entries: tuple[DocumentEntry, ...]
    original_ids: dict[str, str] = field(default_factory=dict)  # entry UUID -> id in the request


def cxi(value: str, id_type: str, issuer_oid: str | None = None) -> str:
    """A referenceIdList value, ``value^^^&issuer&ISO^type`` (ITI TF-3 Table 4.2.3.1.7-2); without an
    assigning authority for globally unique values (a Study Instance UID): ``value^^^^type``."""
    authority = f"&{issuer_oid}&ISO" if issuer_oid else ""
    return f"{value}^^^{authority}^{id_type}"


# -- building --------------------------------------------------------------------------------------
def _slot(parent: etree._Element, name: str, values: Iterable[str]) -> None:
    slot = etree.SubElement(parent, rim("Slot"), name=name)
    value_list = etree.SubElement(slot, rim("ValueList"))
    for value in values:
        etree.SubElement(value_list, rim("Value")).text = value


def _name(parent: etree._Element, text: str) -> None:
    etree.SubElement(etree.SubElement(parent, rim("Name")), rim("LocalizedString"), value=text)


def _child_id(owner: str, *parts: str) -> str:
    """Stable ids for an object's Classifications and ExternalIdentifiers (same answer every time)."""
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, '|'.join((owner, *parts)))}"


def _classification(parent: etree._Element, scheme: str, owner: str, coded: Coded) -> None:
    el = etree.SubElement(
        parent, rim("Classification"), id=_child_id(owner, scheme, coded.scheme, coded.code),
        classificationScheme=scheme, classifiedObject=owner, nodeRepresentation=coded.code,
        objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:Classification",
    )  # fmt: skip
    _slot(el, "codingScheme", [coded.scheme])
    _name(el, coded.display)


def _external_id(parent: etree._Element, scheme: str, owner: str, value: str, name: str) -> None:
    el = etree.SubElement(
        parent, rim("ExternalIdentifier"), id=_child_id(owner, scheme), registryObject=owner,
        identificationScheme=scheme, value=value,
        objectType="urn:oasis:names:tc:ebxml-regrep:ObjectType:RegistryObject:ExternalIdentifier",
    )  # fmt: skip
    _name(el, name)


def document_entry_element(entry: DocumentEntry) -> etree._Element:
    """The ExtrinsicObject of a DocumentEntry (ITI TF-3 4.2.3.2), children in rim.xsd's order."""
    attrs = {"id": entry.entry_uuid, "mimeType": entry.mime_type, "objectType": STABLE_DOCUMENT_ENTRY}
    attrs["status"] = entry.status
    if entry.home_community_id:
        attrs["home"] = entry.home_community_id
    el = etree.Element(rim("ExtrinsicObject"), attrs, nsmap={"rim": RIM})
    slots = {
        "creationTime": [entry.creation_time],
        "languageCode": [entry.language_code],
        "serviceStartTime": [entry.service_start_time] if entry.service_start_time else [],
        "sourcePatientId": [entry.source_patient_id or entry.patient_id],
        "sourcePatientInfo": list(entry.source_patient_info),
        "hash": [entry.hash] if entry.hash else [],
        "size": [str(entry.size)] if entry.size is not None else [],
        "repositoryUniqueId": [entry.repository_unique_id] if entry.repository_unique_id else [],
        REFERENCE_ID_LIST: list(entry.reference_ids),
    }
    for name, values in slots.items():
        if values:
            _slot(el, name, values)
    _name(el, entry.title)
    owner = entry.entry_uuid
    _classification(el, _CLASS_CODE, owner, entry.class_code)
    _classification(el, _CONFIDENTIALITY, owner, entry.confidentiality_code)
    for event in entry.event_codes:
        _classification(el, _EVENT_CODE, owner, event)
    _classification(el, _FORMAT_CODE, owner, entry.format_code)
    _classification(el, _FACILITY_TYPE, owner, entry.healthcare_facility_type)
    _classification(el, _PRACTICE_SETTING, owner, entry.practice_setting)
    _classification(el, _TYPE_CODE, owner, entry.type_code)
    _external_id(el, _DE_PATIENT_ID, owner, entry.patient_id, "XDSDocumentEntry.patientId")
    _external_id(el, _DE_UNIQUE_ID, owner, entry.unique_id, "XDSDocumentEntry.uniqueId")
    return el


def submission_elements(ss: SubmissionSet, entries: Iterable[DocumentEntry]) -> list[etree._Element]:
    """The SubmissionSet RegistryPackage, its classification as a SubmissionSet and one HasMember
    Association per entry (ITI TF-3 4.2.3.3), ready for a RegistryObjectList."""
    package = etree.Element(rim("RegistryPackage"), id=ss.entry_uuid, nsmap={"rim": RIM})
    _slot(package, "submissionTime", [ss.submission_time])
    _name(package, ss.title or "Submission")
    _classification(package, _SS_CONTENT_TYPE, ss.entry_uuid, ss.content_type_code)
    _external_id(package, _SS_UNIQUE_ID, ss.entry_uuid, ss.unique_id, "XDSSubmissionSet.uniqueId")
    _external_id(package, _SS_SOURCE_ID, ss.entry_uuid, ss.source_id, "XDSSubmissionSet.sourceId")
    _external_id(package, _SS_PATIENT_ID, ss.entry_uuid, ss.patient_id, "XDSSubmissionSet.patientId")
    node = etree.Element(
        rim("Classification"), id=_child_id(ss.entry_uuid, SUBMISSION_SET_NODE),
        classifiedObject=ss.entry_uuid, classificationNode=SUBMISSION_SET_NODE, nsmap={"rim": RIM},
    )  # fmt: skip
    result = [package, node]
    for entry in entries:
        assoc = etree.Element(
            rim("Association"), id=_child_id(ss.entry_uuid, "member", entry.entry_uuid),
            associationType=HAS_MEMBER, sourceObject=ss.entry_uuid, targetObject=entry.entry_uuid,
            nsmap={"rim": RIM},
        )  # fmt: skip
        _slot(assoc, "SubmissionSetStatus", ["Original"])
        result.append(assoc)
    return result


def object_ref_element(entry_uuid: str, home: str) -> etree._Element:
    return etree.Element(rim("ObjectRef"), {"id": entry_uuid, "home": home}, nsmap={"rim": RIM})


# -- reading ---------------------------------------------------------------------------------------
def _slots(el: etree._Element) -> dict[str, list[str]]:
    return {
        s.get("name", ""): [(v.text or "").strip() for v in s.iterfind(f"{rim('ValueList')}/{rim('Value')}")]
        for s in el.iterfind(rim("Slot"))
    }


def _localized(el: etree._Element) -> str:
    found = el.find(f"{rim('Name')}/{rim('LocalizedString')}")
    return found.get("value", "") if found is not None else ""


def _codes(el: etree._Element, scheme: str) -> list[Coded]:
    result = []
    for c in el.iterfind(rim("Classification")):
        if c.get("classificationScheme") == scheme:
            schemes = _slots(c).get("codingScheme", [])
            if not c.get("nodeRepresentation") or len(schemes) != 1:
                raise XdsError(
                    "XDSRegistryMetadataError", f"a code of {scheme} lacks its code or codingScheme"
                )
            result.append(Coded(c.get("nodeRepresentation", ""), schemes[0], _localized(c)))
    return result


def _one_code(el: etree._Element, scheme: str, attribute: str) -> Coded:
    codes = _codes(el, scheme)
    if len(codes) != 1:
        raise XdsError("XDSRegistryMetadataError", f"DocumentEntry.{attribute} must occur exactly once")
    return codes[0]


def _external(el: etree._Element, scheme: str, attribute: str) -> str:
    values = [e.get("value", "") for e in el.iterfind(rim("ExternalIdentifier"))
              if e.get("identificationScheme") == scheme]  # fmt: skip
    if len(values) != 1 or not values[0]:
        raise XdsError("XDSRegistryMetadataError", f"{attribute} must occur exactly once")
    return values[0]


def _single(slots: dict[str, list[str]], name: str, *, required: bool = False) -> str:
    values = slots.get(name, [])
    if len(values) > 1 or (required and not values):
        raise XdsError("XDSRegistryMetadataError", f"slot {name} must hold exactly one value")
    return values[0] if values else ""


def read_document_entry(el: etree._Element) -> DocumentEntry:
    """A DocumentEntry from its ExtrinsicObject; a missing required attribute is XDSRegistryMetadataError."""
    slots = _slots(el)
    size = _single(slots, "size")
    if size and not size.isdigit():
        raise XdsError("XDSRegistryMetadataError", "DocumentEntry.size is not a number")
    return DocumentEntry(
        entry_uuid=el.get("id", ""),
        unique_id=_external(el, _DE_UNIQUE_ID, "DocumentEntry.uniqueId"),
        patient_id=_external(el, _DE_PATIENT_ID, "DocumentEntry.patientId"),
        mime_type=el.get("mimeType", ""),
        title=_localized(el),
        creation_time=_single(slots, "creationTime", required=True),
        class_code=_one_code(el, _CLASS_CODE, "classCode"),
        type_code=_one_code(el, _TYPE_CODE, "typeCode"),
        format_code=_one_code(el, _FORMAT_CODE, "formatCode"),
        confidentiality_code=_one_code(el, _CONFIDENTIALITY, "confidentialityCode"),
        healthcare_facility_type=_one_code(el, _FACILITY_TYPE, "healthcareFacilityTypeCode"),
        practice_setting=_one_code(el, _PRACTICE_SETTING, "practiceSettingCode"),
        language_code=_single(slots, "languageCode", required=True),
        source_patient_id=_single(slots, "sourcePatientId"),
        source_patient_info=tuple(slots.get("sourcePatientInfo", [])),
        service_start_time=_single(slots, "serviceStartTime"),
        event_codes=tuple(_codes(el, _EVENT_CODE)),
        reference_ids=tuple(slots.get(REFERENCE_ID_LIST, [])),
        hash=_single(slots, "hash").lower(),
        size=int(size) if size else None,
        repository_unique_id=_single(slots, "repositoryUniqueId"),
        home_community_id=el.get("home", ""),
        status=el.get("status", APPROVED),
    )


def _is_submission_set(package: etree._Element, objects: etree._Element) -> bool:
    pid = package.get("id")
    nested = package.iterfind(rim("Classification"))
    siblings = objects.iterfind(rim("Classification"))
    return any(
        c.get("classificationNode") == SUBMISSION_SET_NODE and c.get("classifiedObject") in (pid, None)
        for c in [*nested, *siblings]
    )


def read_submission(request: etree._Element) -> Submission:
    """The SubmissionSet and DocumentEntries of an lcm:SubmitObjectsRequest; symbolic ids (ITI TF-3
    4.2.3.1) become urn:uuid ids. Only HasMember associations of documents are taken (this slice)."""
    objects = request.find(rim("RegistryObjectList"))
    if objects is None:
        raise XdsError("XDSRegistryMetadataError", "SubmitObjectsRequest without RegistryObjectList")
    packages = [p for p in objects.iterfind(rim("RegistryPackage")) if _is_submission_set(p, objects)]
    if len(packages) != 1:
        raise XdsError("XDSRegistryMetadataError", "exactly one SubmissionSet is required")
    associations = list(objects.iterfind(rim("Association")))
    if (
        any(a.get("associationType") != HAS_MEMBER for a in associations)
        or len(objects.findall(rim("RegistryPackage"))) > 1
    ):
        raise XdsError(
            "XDSRegistryError",
            "only new documents in one SubmissionSet (no folders, no document relationships)",
        )
    given = [el.get("id", "") for el in objects if isinstance(el.tag, str)]
    if len(set(given)) != len(given):
        raise XdsError("XDSRegistryMetadataError", "an id is given to two objects of the submission")
    ids = {identifier: _as_uuid(identifier) for identifier in given}
    entries = [read_document_entry(e) for e in objects.iterfind(rim("ExtrinsicObject"))]
    members = {a.get("targetObject") for a in associations if a.get("sourceObject") == packages[0].get("id")}
    if unlinked := [e.entry_uuid for e in entries if e.entry_uuid not in members]:
        raise XdsError(
            "XDSRegistryMetadataError", f"DocumentEntry {unlinked[0]} is not a member of the SubmissionSet"
        )
    return Submission(
        submission_set=_read_submission_set(packages[0], ids),
        entries=tuple(replace(e, entry_uuid=ids[e.entry_uuid]) for e in entries),
        original_ids={ids[e.entry_uuid]: e.entry_uuid for e in entries},
    )


def _as_uuid(identifier: str) -> str:
    return identifier if identifier.startswith("urn:uuid:") else f"urn:uuid:{uuid.uuid4()}"


def _read_submission_set(package: etree._Element, ids: dict[str, str]) -> SubmissionSet:
    slots = _slots(package)
    content_types = _codes(package, _SS_CONTENT_TYPE)
    if len(content_types) != 1:
        raise XdsError("XDSRegistryMetadataError", "SubmissionSet.contentTypeCode must occur exactly once")
    return SubmissionSet(
        entry_uuid=ids[package.get("id", "")],
        unique_id=_external(package, _SS_UNIQUE_ID, "SubmissionSet.uniqueId"),
        source_id=_external(package, _SS_SOURCE_ID, "SubmissionSet.sourceId"),
        patient_id=_external(package, _SS_PATIENT_ID, "SubmissionSet.patientId"),
        submission_time=_single(slots, "submissionTime", required=True),
        content_type_code=content_types[0],
        title=_localized(package),
    )
