"""ITI-41 Provide and Register Document Set-b (repository side), registering with ITI-42 in-process.

ITI TF-2b 3.41.4.1.3: every DocumentEntry has exactly one Document and the reverse
(XDSMissingDocument, XDSMissingDocumentMetadata); the repository sets size, hash and
repositoryUniqueId, refusing values a submitter gave that do not match (XDSRepositoryMetadataError).
ITI TF-2b 3.42.4.1.3: patient ids are of the affinity domain (XDSUnknownPatientId) and the same on the
SubmissionSet and every entry (XDSPatientIdDoesNotMatch); a refusal stores nothing.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import replace

from lxml import etree

from ncp.registry.xds.ebrim import (
    APPROVED,
    RIM,
    DocumentEntry,
    Submission,
    SubmissionSet,
    XdsError,
    document_entry_element,
    read_submission,
    rim,
    submission_elements,
)
from ncp.registry.xds.settings import XdsSettings
from ncp.registry.xds.store import XdsStore
from ncp.soapcore import NS, SoapFault, binary_content, q

__all__ = [
    "ACTION",
    "IHE",
    "RESPONSE_ACTION",
    "prepare",
    "provide_and_register",
    "provide_and_register_request",
]

ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-b"
RESPONSE_ACTION = "urn:ihe:iti:2007:ProvideAndRegisterDocumentSet-bResponse"
IHE = "urn:ihe:iti:xds-b:2007"
LCM = "urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"


def prepare(
    request: etree._Element, attachments: dict[str, bytes], settings: XdsSettings
) -> tuple[Submission, list[tuple[DocumentEntry, bytes]]]:
    """The submission and each entry with its bytes, checked and completed; raises XdsError."""
    if request.tag != f"{{{IHE}}}ProvideAndRegisterDocumentSetRequest":
        raise SoapFault("the body of ITI-41 must be a ProvideAndRegisterDocumentSetRequest")
    submit = request.find(f"{{{LCM}}}SubmitObjectsRequest")
    if submit is None:
        raise SoapFault("ProvideAndRegisterDocumentSetRequest without SubmitObjectsRequest")
    submission = read_submission(submit)
    documents: dict[str, bytes] = {}
    for doc in request.iterfind(f"{{{IHE}}}Document"):
        if doc.get("id", "") in documents:
            raise XdsError("XDSRepositoryError", f"document {doc.get('id')} is given twice")
        documents[doc.get("id", "")] = binary_content(doc, attachments)
    originals = {submission.original_ids[e.entry_uuid] for e in submission.entries}
    if extra := sorted(set(documents) - originals):
        raise XdsError("XDSMissingDocumentMetadata", f"no DocumentEntry for document {extra[0]}")
    _check_patients(submission, settings)
    checked = [
        _complete(e, documents, submission.original_ids[e.entry_uuid], settings) for e in submission.entries
    ]
    return submission, checked


def _check_patients(submission: Submission, settings: XdsSettings) -> None:
    patient = submission.submission_set.patient_id
    if _assigning_authority(patient) != settings.patient_id_domain:
        raise XdsError(
            "XDSUnknownPatientId",
            f"patient id {patient} is not of affinity domain {settings.patient_id_domain}",
        )
    for entry in submission.entries:
        if entry.patient_id != patient:
            raise XdsError(
                "XDSPatientIdDoesNotMatch", f"DocumentEntry {entry.unique_id} has another patient id"
            )


def _assigning_authority(cx: str) -> str:
    """The OID of a CX ``id^^^&oid&ISO`` (ITI TF-3 Table 4.2.3.1.7-2); '' when malformed."""
    fields = cx.split("^")
    if len(fields) != 4 or not fields[0]:
        return ""
    authority = fields[3].split("&")
    return authority[1] if len(authority) == 3 and authority[2] == "ISO" else ""


def _complete(
    entry: DocumentEntry, documents: dict[str, bytes], original: str, settings: XdsSettings
) -> tuple[DocumentEntry, bytes]:
    if original not in documents:
        raise XdsError("XDSMissingDocument", f"DocumentEntry {entry.unique_id} has no document")
    if not entry.mime_type:
        raise XdsError("XDSRegistryMetadataError", f"DocumentEntry {entry.unique_id} has no mimeType")
    data = documents[original]
    digest = hashlib.sha1(data).hexdigest()
    if (entry.hash and entry.hash != digest) or (entry.size is not None and entry.size != len(data)):
        raise XdsError(
            "XDSRepositoryMetadataError", f"hash or size of {entry.unique_id} does not match its document"
        )
    if entry.repository_unique_id not in ("", settings.repository_unique_id):
        raise XdsError(
            "XDSRepositoryMetadataError", f"repositoryUniqueId of {entry.unique_id} is not this repository"
        )
    completed = replace(
        entry,
        hash=digest,
        size=len(data),
        repository_unique_id=settings.repository_unique_id,
        status=APPROVED,
        home_community_id="",
    )
    return completed, data


def provide_and_register(
    request: etree._Element, attachments: dict[str, bytes], settings: XdsSettings, store: XdsStore
) -> None:
    """Blocking: checks, then registers and stores the whole submission in one transaction."""
    submission, documents = prepare(request, attachments, settings)
    store.submit(submission.submission_set, documents)


def provide_and_register_request(
    submission_set: SubmissionSet, documents: list[tuple[DocumentEntry, bytes]], *, mtom: bool = True
) -> tuple[etree._Element, list[tuple[str, bytes]]]:
    """The request an Imaging Document Source sends (ITI-41 / RAD-68): metadata, then each document as an
    xop:Include of a MIME part (``mtom``) or inline base64; returns the body and its MIME parts."""
    request = etree.Element(
        f"{{{IHE}}}ProvideAndRegisterDocumentSetRequest", nsmap={"ihe": IHE, "xop": NS["xop"]}
    )
    submit = etree.SubElement(request, f"{{{LCM}}}SubmitObjectsRequest", nsmap={"lcm": LCM, "rim": RIM})
    objects = etree.SubElement(submit, rim("RegistryObjectList"))
    entries = [entry for entry, _ in documents]
    for entry in entries:
        objects.append(document_entry_element(entry))
    objects.extend(submission_elements(submission_set, entries))
    parts = []
    for entry, data in documents:
        document = etree.SubElement(request, f"{{{IHE}}}Document", id=entry.entry_uuid)
        if mtom:
            cid = f"{uuid.uuid4().hex}@xcwado"
            etree.SubElement(document, q("xop", "Include"), href=f"cid:{cid}")
            parts.append((cid, data))
        else:
            document.text = base64.b64encode(data).decode("ascii")
    return request, parts
