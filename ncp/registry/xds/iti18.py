"""ITI-18 Registry Stored Query: FindDocuments, FindDocumentsByReferenceId, GetDocuments.

Parameter syntax per ITI TF-2a 3.18.4.1.2.3: values are quoted strings or parenthesised lists of
them; several values of one slot are ORed, several slots of the same name ANDed (the code lists);
codes are ``code^^scheme``; ``...From`` is inclusive, ``...To`` exclusive. Errors: XDSUnknownStoredQuery,
XDSStoredQueryParamNumber.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace

from lxml import etree

from ncp.registry.xds.ebrim import (
    FAILURE,
    RIM,
    RS,
    SUCCESS,
    Coded,
    DocumentEntry,
    XdsError,
    append_errors,
    document_entry_element,
    object_ref_element,
    rim,
)
from ncp.registry.xds.settings import XdsSettings
from ncp.registry.xds.store import XdsStore
from ncp.soapcore import SoapFault

__all__ = [
    "ACTION",
    "FIND_DOCUMENTS",
    "FIND_DOCUMENTS_BY_REFERENCE_ID",
    "GET_DOCUMENTS",
    "QUERY",
    "RESPONSE_ACTION",
    "StoredQuery",
    "query_response",
    "read_query",
    "run_query",
    "stored_query_request",
]

ACTION = "urn:ihe:iti:2007:RegistryStoredQuery"
RESPONSE_ACTION = "urn:ihe:iti:2007:RegistryStoredQueryResponse"
QUERY = "urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
FIND_DOCUMENTS = "urn:uuid:14d4debf-8f97-4251-9a74-a90016b0af0d"
FIND_DOCUMENTS_BY_REFERENCE_ID = "urn:uuid:12941a89-e02e-4be5-967c-ce4bfc8fe492"
GET_DOCUMENTS = "urn:uuid:5c4f972b-d56b-40ac-a5fc-c8ca9b40b9d4"
_P = "$XDSDocumentEntry"
# DocumentEntry code attributes that FindDocuments filters on (ITI TF-2a 3.18.4.1.2.3.7)
_CODE_PARAMS: dict[str, Callable[[DocumentEntry], tuple[Coded, ...]]] = {
    f"{_P}ClassCode": lambda e: (e.class_code,),
    f"{_P}TypeCode": lambda e: (e.type_code,),
    f"{_P}PracticeSettingCode": lambda e: (e.practice_setting,),
    f"{_P}HealthcareFacilityTypeCode": lambda e: (e.healthcare_facility_type,),
    f"{_P}FormatCode": lambda e: (e.format_code,),
    f"{_P}EventCodeList": lambda e: e.event_codes,
    f"{_P}ConfidentialityCode": lambda e: (e.confidentiality_code,),
}
_TIME_PARAMS: dict[str, Callable[[DocumentEntry], str]] = {
    f"{_P}CreationTime": lambda e: e.creation_time,
    f"{_P}ServiceStartTime": lambda e: e.service_start_time,
}
_VALUE = re.compile(r"\s*'((?:[^']|'')*)'\s*|\s*([^',()\s]+)\s*")


@dataclass(frozen=True)
class StoredQuery:
    query_id: str
    return_type: str  # LeafClass | ObjectRef
    home: str | None
    params: dict[str, list[list[str]]]  # slot name -> one list of ORed values per slot occurrence

    def one(self, name: str) -> str | None:
        occurrences = self.params.get(name, [])
        if len(occurrences) > 1 or any(len(values) != 1 for values in occurrences):
            raise XdsError("XDSStoredQueryParamNumber", f"{name} takes a single value")
        return occurrences[0][0] if occurrences else None

    def required(self, name: str) -> str:
        value = self.one(name)
        if value is None:
            raise XdsError("XDSStoredQueryParamNumber", f"{name} is required")
        return value

    def any_of(self, name: str) -> list[str]:
        return [v for values in self.params.get(name, []) for v in values]


def parse_values(raw: str) -> list[str]:
    """``'a'``, ``('a','b')`` or a bare number as a list of strings; '' quoted by doubling."""
    text = raw.strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    values, pos = [], 0
    while pos < len(text):
        match = _VALUE.match(text, pos)
        if not match:
            raise XdsError("XDSRegistryError", f"malformed query parameter value {raw!r}")
        values.append(match.group(1).replace("''", "'") if match.group(1) is not None else match.group(2))
        pos = match.end()
        if pos < len(text) and text[pos] != ",":
            raise XdsError("XDSRegistryError", f"malformed query parameter value {raw!r}")
        pos += 1
    return values


def read_query(request: etree._Element) -> StoredQuery:
    if request.tag != f"{{{QUERY}}}AdhocQueryRequest":
        raise SoapFault("the body of ITI-18 must be an AdhocQueryRequest")
    option = request.find(f"{{{QUERY}}}ResponseOption")
    query = request.find(rim("AdhocQuery"))
    if option is None or query is None:
        raise SoapFault("AdhocQueryRequest needs ResponseOption and AdhocQuery")
    return_type = option.get("returnType", "RegistryObject")
    if return_type not in ("LeafClass", "ObjectRef"):
        raise XdsError(
            "XDSRegistryError", f"returnType {return_type} is not supported (LeafClass, ObjectRef)"
        )
    params: dict[str, list[list[str]]] = {}
    for slot in query.iterfind(rim("Slot")):
        values = [
            v
            for el in slot.iterfind(f"{rim('ValueList')}/{rim('Value')}")
            for v in parse_values(el.text or "")
        ]
        params.setdefault(slot.get("name", ""), []).append(values)
    return StoredQuery(query.get("id", ""), return_type, query.get("home"), params)


def run_query(query: StoredQuery, settings: XdsSettings, store: XdsStore) -> list[DocumentEntry]:
    """Blocking: the DocumentEntries the stored query selects."""
    if query.home not in (None, "", settings.home):
        raise XdsError("XDSUnknownCommunity", f"homeCommunityId {query.home} is not this community")
    if query.query_id == GET_DOCUMENTS:
        uuids, unique_ids = query.any_of(f"{_P}EntryUUID"), query.any_of(f"{_P}UniqueId")
        if bool(uuids) == bool(unique_ids):
            raise XdsError(
                "XDSStoredQueryParamNumber", f"exactly one of {_P}EntryUUID and {_P}UniqueId is required"
            )
        return store.by_ids(uuids, unique_ids)
    if query.query_id not in (FIND_DOCUMENTS, FIND_DOCUMENTS_BY_REFERENCE_ID):
        raise XdsError("XDSUnknownStoredQuery", f"stored query {query.query_id} is not supported")
    patient, statuses = _patient_and_status(query)
    keep = _filter(query)  # parsed before the store is asked: a malformed filter is refused, not ignored
    if query.query_id == FIND_DOCUMENTS:
        return [e for e in store.by_patient(patient, statuses) if keep(e)]
    refs = query.any_of(f"{_P}ReferenceIdList")
    if not refs:
        raise XdsError("XDSStoredQueryParamNumber", f"{_P}ReferenceIdList is required")
    return [e for e in store.by_reference(patient, statuses, refs) if keep(e)]


def _patient_and_status(query: StoredQuery) -> tuple[str, list[str]]:
    patient = query.required(f"{_P}PatientId")
    statuses = query.any_of(f"{_P}Status")
    if not statuses:
        raise XdsError("XDSStoredQueryParamNumber", f"{_P}Status is required")
    return patient, statuses


def _filter(query: StoredQuery) -> Callable[[DocumentEntry], bool]:
    """The code (AND of slots, OR of values) and time range filters of FindDocuments."""
    codes = [
        (codes_of, [{_code(v) for v in alternatives} for alternatives in query.params.get(name, [])])
        for name, codes_of in _CODE_PARAMS.items()
    ]
    times = [
        (time_of, query.one(f"{name}From"), query.one(f"{name}To")) for name, time_of in _TIME_PARAMS.items()
    ]

    def keep(entry: DocumentEntry) -> bool:
        for codes_of, slots in codes:
            held = {(c.code, c.scheme) for c in codes_of(entry)}
            if any(not held & alternatives for alternatives in slots):
                return False
        for time_of, low, high in times:
            value = time_of(entry)
            if (low and value[: len(low)] < low) or (high and value[: len(high)] >= high):
                return False
        return True

    return keep


def _code(value: str) -> tuple[str, str]:
    code, sep, scheme = value.partition("^^")
    if not sep or not code or not scheme:
        raise XdsError("XDSRegistryError", f"a code parameter must be code^^scheme, not {value!r}")
    return code, scheme


def query_response(
    entries: list[DocumentEntry], query: StoredQuery | None, settings: XdsSettings, errors: list[XdsError]
) -> etree._Element:
    """query:AdhocQueryResponse: LeafClass ExtrinsicObjects or ObjectRefs, each with ``home``."""
    status = FAILURE if errors else SUCCESS
    el = etree.Element(
        f"{{{QUERY}}}AdhocQueryResponse", status=status, nsmap={"query": QUERY, "rim": RIM, "rs": RS}
    )
    append_errors(el, errors, settings.home)
    objects = etree.SubElement(el, rim("RegistryObjectList"))
    for entry in entries:
        if query is not None and query.return_type == "ObjectRef":
            objects.append(object_ref_element(entry.entry_uuid, settings.home))
        else:
            objects.append(document_entry_element(_with_home(entry, settings)))
    return el


def _with_home(entry: DocumentEntry, settings: XdsSettings) -> DocumentEntry:
    return replace(entry, home_community_id=settings.home)


def stored_query_request(
    query_id: str, params: list[tuple[str, str | list[str]]], *, return_type: str = "LeafClass"
) -> etree._Element:
    """An AdhocQueryRequest; a parameter's str value is sent quoted, a list as ``('a','b')`` (ORed);
    a name given twice is two slots (ANDed)."""
    request = etree.Element(f"{{{QUERY}}}AdhocQueryRequest", nsmap={"query": QUERY, "rim": RIM})
    etree.SubElement(
        request, f"{{{QUERY}}}ResponseOption", returnType=return_type, returnComposedObjects="true"
    )
    query = etree.SubElement(request, rim("AdhocQuery"), id=query_id)
    for name, value in params:
        slot = etree.SubElement(query, rim("Slot"), name=name)
        quoted = [
            f"'{v.replace(chr(39), chr(39) * 2)}'" for v in ([value] if isinstance(value, str) else value)
        ]
        text = quoted[0] if isinstance(value, str) else f"({','.join(quoted)})"
        etree.SubElement(etree.SubElement(slot, rim("ValueList")), rim("Value")).text = text
    return request
