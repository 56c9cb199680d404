"""ITI-65 Provide Document Bundle, Document Recipient side (MHD 2:3.65).

The transaction Bundle is validated whole (FHIR R4 via ``fhir.resources.R4B``, then the MHD rules
below) before anything is written; the store then writes it in one SQLite transaction. Rules:

* exactly one SubmissionSet List (2:3.65.4.1.2); Folders are refused (allowed by 2:3.65.4.1.3);
* entries are ``POST`` List/DocumentReference/Binary, ``PUT``/``POST`` Patient, or ``PUT
  DocumentReference/{id}`` with status superseded (the UpdateDocumentRefs slice of a replacement);
* every DocumentReference is ``current``, has a masterIdentifier, a resolvable subject, and each
  ``content.attachment.url`` points at a Binary of the Bundle with the same contentType; every
  Binary is used exactly once; ``size``/``hash`` must match the bytes (filled in when absent);
* a DocumentReference whose masterIdentifier is held by a current document replaces it (the old
  one becomes superseded and the new one gets ``relatesTo replaces``), as does an explicit
  ``relatesTo replaces`` (2:3.65.4.1.2.3).

Ids are assigned by the recipient (FHIR create ignores a client id); attachment URLs become
``{public_base_url}/Binary/{document id}`` (ITI-68, one URL per document, negotiated on Accept).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ncp.errors import InvalidRequest
from ncp.mhd import HCID_EXTENSION, MHD_LIST_TYPES, validate_resource
from ncp.registry.fhirhttp import Registry, check_format, fhir_response, read_json_body, validate_id
from ncp.registry.index import document_dates, document_tokens, normalize_identifier, parse_date_range
from ncp.registry.store import NewDocument, NewPatient, PatientRef, Submission, SubmitResult

__all__ = ["ParsedBundle", "parse_provide_bundle", "provide_document_bundle"]

_PATIENT_REF = re.compile(r"^Patient/([^/]+)$")
_DOCREF_REF = re.compile(r"^DocumentReference/([^/]+)$")


async def provide_document_bundle(request: Request) -> Response:
    """``POST /fhir`` with a transaction Bundle: 200 + transaction-response, or 4xx + OperationOutcome."""
    registry = Registry.of(request)
    check_format(request)
    body = await read_json_body(request, registry.settings.max_bundle_bytes)
    parsed = await run_in_threadpool(parse_provide_bundle, body, registry.settings.home_community_id)
    result = await run_in_threadpool(registry.store.submit, parsed.submission)
    return fhir_response(parsed.response(result, registry.base))


@dataclass
class _Entry:
    """How one request entry is answered: ``kind`` and the index of what it became."""

    kind: str  # "list" | "patient" | "document" | "supersede" | "binary"
    index: int = 0
    doc_id: str = ""


@dataclass
class ParsedBundle:
    submission: Submission
    entries: list[_Entry] = field(default_factory=list)

    def response(self, result: SubmitResult, base: str) -> dict[str, Any]:
        """transaction-response: one entry per request entry, same order (MHD 2:3.65.4.2.2)."""
        out = []
        for e in self.entries:
            if e.kind == "list":
                status, location = "201 Created", f"List/{self.submission.submission_set_id}/_history/1"
            elif e.kind == "patient":
                pid = result.patient_ids[e.index]
                status = "201 Created" if pid in result.created_patients else "200 OK"
                location = f"Patient/{pid}"
            elif e.kind == "document":
                status, location = "201 Created", f"DocumentReference/{e.doc_id}/_history/1"
            elif e.kind == "supersede":
                status, location = "200 OK", f"DocumentReference/{e.doc_id}/_history/2"
            else:
                status, location = "201 Created", f"Binary/{e.doc_id}"
            out.append({"response": {"status": status, "location": f"{base}/{location}"}})
        return {"resourceType": "Bundle", "type": "transaction-response", "entry": out}


def parse_provide_bundle(bundle: dict[str, Any], home_community_id: str) -> ParsedBundle:
    """Everything ITI-65 checks without the store; raises InvalidRequest naming the offending entry."""
    if bundle.get("resourceType") != "Bundle" or bundle.get("type") != "transaction":
        raise InvalidRequest("ITI-65 needs a Bundle of type transaction (MHD 2:3.65.4.1.2)")
    _check_json(bundle)
    _validate(bundle)
    entries = bundle.get("entry") or []
    if not entries:
        raise InvalidRequest("the transaction Bundle has no entries")
    return _Parser(entries, home_community_id).parse()


def _check_json(bundle: dict[str, Any]) -> None:
    """What the R4B models let through but the code below cannot take (both were 500s), checked
    iteratively (no recursion on hostile input):

    * every ``resourceType`` names a FHIR R4 type: the models look a nested resource's class up by that
      name and fail with KeyError or TypeError, not a ValidationError, on a name they do not know;
    * no ``null``: FHIR JSON has none (R4 JSON 2.6.2), bar array items that a ``_name`` sibling
      array extends, yet the models accept ``"related": null`` and the like.
    """
    known: set[str] = set()
    stack: list[Any] = [bundle]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            if "resourceType" in node:
                name = node["resourceType"]
                if not (isinstance(name, str) and (name in known or _is_type(name))):
                    raise InvalidRequest(f"unknown FHIR R4 resourceType {str(name)[:64]!r}")
                known.add(name)
            for key, value in node.items():
                _check_not_null(node, key, value)
                stack.append(value)


def _validate(bundle: dict[str, Any]) -> None:
    """:func:`ncp.mhd.validate_resource`, where the R4B models' own failures on hostile values are the
    input's fault too: a dict where a ``url`` belongs raises TypeError inside their validators, not a
    ValidationError (it was a 500)."""
    try:
        validate_resource(bundle)
    except (TypeError, AttributeError, KeyError) as exc:
        raise InvalidRequest(f"the Bundle is not valid FHIR R4 ({type(exc).__name__}: {exc})"[:300]) from None


def _check_not_null(node: dict[str, Any], key: str, value: Any) -> None:
    if value is None or (isinstance(value, list) and None in value and f"_{key}" not in node):
        raise InvalidRequest(f"{str(key)[:64]!r} is null: FHIR JSON has no null values (R4 JSON 2.6.2)")


def _is_type(name: str) -> bool:
    from fhir.resources.R4B import get_fhir_model_class  # heavy import, as in ncp.mhd.validate_resource

    try:
        get_fhir_model_class(name)
    except (KeyError, ValueError):
        return False
    return True


class _Parser:
    def __init__(self, entries: list[dict[str, Any]], home_community_id: str) -> None:
        self.entries = entries
        self.hcid = home_community_id
        self.patients: list[NewPatient] = []
        self.patient_urls: dict[str, int] = {}  # fullUrl or Patient/{id} -> index in self.patients
        self.binaries: dict[str, int] = {}  # fullUrl or Binary/{id} -> entry index
        self.doc_urls: dict[str, str] = {}  # fullUrl -> assigned DocumentReference id
        self.used_binaries: set[int] = set()
        self.plan: list[_Entry] = []

    def parse(self) -> ParsedBundle:
        lists: list[int] = []
        docs: list[int] = []
        supersede: list[str] = []
        full_urls = [e["fullUrl"] for e in self.entries if isinstance(e, dict) and e.get("fullUrl")]
        if len(set(full_urls)) != len(full_urls):  # FHIR Bundle: fullUrl is unique within a Bundle
            raise InvalidRequest("two entries of the Bundle share a fullUrl")
        for i, entry in enumerate(self.entries):
            kind = self._classify(i, entry)
            if kind == "list":
                lists.append(i)
            elif kind == "document":
                docs.append(i)
                self.doc_urls[entry.get("fullUrl") or f"#{i}"] = uuid.uuid4().hex
            elif kind == "supersede":
                supersede.append(self._supersede_target(i, entry))
        if len(lists) != 1:
            raise InvalidRequest(f"ITI-65 needs exactly one SubmissionSet List, found {len(lists)}")
        if not docs:
            raise InvalidRequest("the Bundle carries no DocumentReference to create")
        documents = [self._document(i) for i in docs]
        self._check_binaries_used()
        self._check_unique_masters(documents)
        submission_set_id = uuid.uuid4().hex
        submission_set = self._submission_set(lists[0], submission_set_id)
        return ParsedBundle(
            Submission(submission_set_id, submission_set, self.patients, documents, supersede), self.plan
        )

    # -- entries -----------------------------------------------------------------------------------
    def _classify(self, i: int, entry: dict[str, Any]) -> str:
        resource = entry.get("resource")
        request = entry.get("request") or {}
        method, url = request.get("method"), str(request.get("url", ""))
        if not isinstance(resource, dict):
            raise InvalidRequest(f"entry[{i}] has no resource")
        rtype = resource.get("resourceType")
        full_url = entry.get("fullUrl")
        if rtype == "List" and method == "POST":
            self._check_list_code(i, resource)
            self.plan.append(_Entry("list"))
            return "list"
        if rtype == "Patient" and method in ("PUT", "POST"):
            self._patient(i, resource, method, url, full_url)
            return "patient"
        if rtype == "DocumentReference" and method == "POST":
            self.plan.append(_Entry("document", doc_id=""))  # id filled in by _document
            return "document"
        if rtype == "DocumentReference" and method == "PUT":
            self.plan.append(_Entry("supersede"))
            return "supersede"
        if rtype == "Binary" and method == "POST":
            for key in (full_url, f"Binary/{resource['id']}" if resource.get("id") else None):
                if key:
                    self.binaries[key] = i
            self.plan.append(_Entry("binary"))
            return "binary"
        raise InvalidRequest(
            f"entry[{i}]: {method} {rtype} is not part of ITI-65 "
            "(POST List/DocumentReference/Binary, PUT or POST Patient, PUT DocumentReference to supersede)"
        )

    @staticmethod
    def _check_list_code(i: int, resource: dict[str, Any]) -> None:
        codes = {(c.get("system"), c.get("code")) for c in resource.get("code", {}).get("coding", [])}
        if (MHD_LIST_TYPES, "submissionset") in codes:
            return
        if (MHD_LIST_TYPES, "folder") in codes:
            raise InvalidRequest(
                f"entry[{i}]: Folders are not supported by this recipient (MHD 2:3.65.4.1.3)"
            )
        raise InvalidRequest(f"entry[{i}]: a List must be coded {MHD_LIST_TYPES}|submissionset")

    def _patient(self, i: int, resource: dict[str, Any], method: str, url: str, full_url: str | None) -> None:
        pid: str | None = None
        if method == "PUT":
            match = _PATIENT_REF.fullmatch(url)
            if match is None:
                raise InvalidRequest(f"entry[{i}]: PUT Patient needs request.url Patient/{{id}}, got {url!r}")
            pid = validate_id(match.group(1), f"entry[{i}] Patient id")
            if resource.get("id", pid) != pid:
                raise InvalidRequest(f"entry[{i}]: Patient.id {resource.get('id')!r} differs from {url!r}")
        identifiers = tuple(
            (str(x["system"]), str(x["value"]))
            for x in resource.get("identifier", [])
            if x.get("system") and x.get("value")
        )
        if pid is None and not identifiers:
            raise InvalidRequest(f"entry[{i}]: a POSTed Patient needs an identifier to be matched on")
        name = (resource.get("name") or [{}])[0]
        birth = parse_date_range(resource["birthDate"]) if resource.get("birthDate") else None
        index = len(self.patients)
        self.patients.append(
            NewPatient(
                pid,
                resource,
                identifiers,
                str(name.get("family", "")),
                " ".join(g for g in name.get("given", []) if isinstance(g, str)),  # null: see _check_json
                str(resource.get("gender", "")),
                birth,
            )
        )
        for key in (full_url, f"Patient/{pid}" if pid else None):
            if key:
                self.patient_urls[key] = index
        self.plan.append(_Entry("patient", index))

    def _supersede_target(self, i: int, entry: dict[str, Any]) -> str:
        match = _DOCREF_REF.fullmatch(str(entry["request"].get("url", "")))
        if match is None or entry["resource"].get("status") != "superseded":
            raise InvalidRequest(
                f"entry[{i}]: PUT DocumentReference/{{id}} is accepted only to mark a document superseded"
            )
        doc_id = validate_id(match.group(1), f"entry[{i}] DocumentReference id")
        self.plan[i].doc_id = doc_id
        return doc_id

    # -- DocumentReference -------------------------------------------------------------------------
    def _document(self, i: int) -> NewDocument:
        entry = self.entries[i]
        doc = dict(entry["resource"])
        doc_id = self.doc_urls[entry.get("fullUrl") or f"#{i}"]
        self.plan[i].doc_id = doc_id
        where = f"entry[{i}] DocumentReference"
        if doc.get("status") != "current":
            raise InvalidRequest(f"{where}: status must be current, not {doc.get('status')!r}")
        master = doc.get("masterIdentifier") or {}
        if not master.get("value"):
            raise InvalidRequest(f"{where}: masterIdentifier (the document uniqueId) is required")
        subject = self._subject(where, doc.get("subject"))
        representations = self._contents(where, doc, doc_id)
        replaces = self._relates_to(where, doc)
        doc["id"] = doc_id
        doc["extension"] = [e for e in doc.get("extension", []) if e.get("url") != HCID_EXTENSION]
        doc["extension"].append({"url": HCID_EXTENSION, "valueOid": f"urn:oid:{self.hcid}"})
        master_key = "|".join(normalize_identifier(str(master.get("system", "")), str(master["value"])))
        return NewDocument(
            doc_id,
            doc,
            subject,
            master_key,
            document_tokens(doc),
            document_dates(doc),
            representations,
            replaces,
        )

    def _subject(self, where: str, subject: Any) -> PatientRef:
        if not isinstance(subject, dict):
            raise InvalidRequest(f"{where}: subject (the Patient) is required (MHD 2:3.65.4.1.2.2)")
        reference = subject.get("reference")
        if isinstance(reference, str):
            if reference in self.patient_urls:
                return PatientRef(bundle_index=self.patient_urls[reference])
            match = _PATIENT_REF.fullmatch(reference)
            if match is None:
                raise InvalidRequest(
                    f"{where}: subject {reference!r} must be a Bundle Patient or Patient/{{id}} known here"
                )
            return PatientRef(id=validate_id(match.group(1), f"{where} subject id"))
        identifier = subject.get("identifier") or {}
        if identifier.get("system") and identifier.get("value"):
            return PatientRef(identifier=(str(identifier["system"]), str(identifier["value"])))
        raise InvalidRequest(f"{where}: subject needs a reference or an identifier")

    def _contents(self, where: str, doc: dict[str, Any], doc_id: str) -> list[tuple[str, bytes, str]]:
        out: list[tuple[str, bytes, str]] = []
        contents = []
        for k, content in enumerate(doc.get("content", [])):
            attachment = dict(content.get("attachment", {}))
            url, content_type = attachment.get("url"), attachment.get("contentType")
            if url not in self.binaries:
                raise InvalidRequest(
                    f"{where}.content[{k}]: attachment.url {url!r} is not a Binary of the Bundle"
                )
            binary = self.entries[self.binaries[url]]["resource"]
            if not content_type or binary.get("contentType") != content_type:
                raise InvalidRequest(
                    f"{where}.content[{k}]: contentType {content_type!r} differs from the Binary's "
                    f"{binary.get('contentType')!r}"
                )
            if any(ct == content_type for ct, _, _ in out):
                raise InvalidRequest(f"{where}: two contents of type {content_type!r} cannot be told apart")
            data = _binary_bytes(f"{where}.content[{k}]", binary)
            _check_size_hash(f"{where}.content[{k}]", attachment, data)
            attachment.update(url=f"Binary/{doc_id}", size=len(data))
            attachment["hash"] = base64.b64encode(hashlib.sha1(data).digest()).decode()
            contents.append({**content, "attachment": attachment})
            out.append((content_type, data, hashlib.sha1(data).hexdigest()))
            self._use_binary(url, doc_id)
        doc["content"] = contents
        return out

    def _use_binary(self, url: str, doc_id: str) -> None:
        index = self.binaries[url]
        if index in self.used_binaries:
            raise InvalidRequest(f"Binary entry[{index}] is referenced by more than one content")
        self.used_binaries.add(index)
        self.plan[index].doc_id = doc_id  # the Binary is retrieved as Binary/{its document's id} (ITI-68)

    def _check_binaries_used(self) -> None:
        orphans = sorted(set(self.binaries.values()) - self.used_binaries)
        if orphans:
            raise InvalidRequest(f"Binary entry[{orphans[0]}] is not the content of any DocumentReference")

    def _relates_to(self, where: str, doc: dict[str, Any]) -> list[str]:
        replaces = []
        relates = []
        for k, rel in enumerate(doc.get("relatesTo", [])):
            target = str(rel.get("target", {}).get("reference", ""))
            if target in self.doc_urls:  # another document of this Bundle (e.g. transforms)
                target = f"DocumentReference/{self.doc_urls[target]}"
            match = _DOCREF_REF.fullmatch(target)
            if match is None:
                raise InvalidRequest(f"{where}.relatesTo[{k}]: target must be DocumentReference/{{id}}")
            if rel.get("code") == "replaces":
                replaces.append(validate_id(match.group(1), f"{where}.relatesTo[{k}] target id"))
            relates.append({**rel, "target": {**rel.get("target", {}), "reference": target}})
        if relates:
            doc["relatesTo"] = relates
        return replaces

    @staticmethod
    def _check_unique_masters(documents: list[NewDocument]) -> None:
        seen: set[str | None] = set()
        for doc in documents:
            if doc.master in seen:
                raise InvalidRequest(
                    f"two DocumentReferences of the Bundle share masterIdentifier {doc.master!r}"
                )
            seen.add(doc.master)

    def _submission_set(self, i: int, submission_set_id: str) -> dict[str, Any]:
        resource = dict(self.entries[i]["resource"])
        items = []
        for k, item in enumerate(resource.get("entry", [])):
            reference = str(item.get("item", {}).get("reference", ""))
            if reference not in self.doc_urls:
                raise InvalidRequest(
                    f"SubmissionSet entry[{k}] {reference!r} is not a DocumentReference of the Bundle"
                )
            items.append({**item, "item": {"reference": f"DocumentReference/{self.doc_urls[reference]}"}})
        listed = {it["item"]["reference"] for it in items}
        missing = [d for d in self.doc_urls.values() if f"DocumentReference/{d}" not in listed]
        if missing:
            raise InvalidRequest("the SubmissionSet List must list every DocumentReference of the Bundle")
        return {**resource, "id": submission_set_id, "entry": items}


def _binary_bytes(where: str, binary: dict[str, Any]) -> bytes:
    data = binary.get("data")
    if not isinstance(data, str):
        raise InvalidRequest(f"{where}: the Binary has no data")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequest(f"{where}: Binary.data is not valid base64") from None


def _check_size_hash(where: str, attachment: dict[str, Any], data: bytes) -> None:
    """MHD 2:3.65.4.1.2.1: size and hash measure the raw bytes of Binary.data."""
    if "size" in attachment and attachment["size"] != len(data):
        raise InvalidRequest(
            f"{where}: attachment.size {attachment['size']} but the Binary has {len(data)} bytes"
        )
    if "hash" in attachment:
        expected = base64.b64encode(hashlib.sha1(data).digest()).decode()
        if attachment["hash"] != expected:
            raise InvalidRequest(f"{where}: attachment.hash is not the SHA-1 of the Binary's bytes")
