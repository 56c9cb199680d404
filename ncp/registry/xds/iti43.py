"""ITI-43 Retrieve Document Set: documents as MTOM/XOP parts (ITI TF-2b 3.43.4.2.2).

Per DocumentRequest: another repository is XDSUnknownRepositoryId, another community
XDSUnknownCommunity, an unknown uniqueId XDSDocumentUniqueIdError (3.43.4.2.3); some found and some
not is PartialSuccess with the found documents.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from lxml import etree

from ncp.registry.xds.ebrim import XdsError, registry_response
from ncp.registry.xds.settings import XdsSettings
from ncp.registry.xds.store import XdsStore
from ncp.soapcore import SoapFault
from ncp.xdsi import DocumentResponse, add_document_response, response_element

__all__ = [
    "ACTION",
    "RESPONSE_ACTION",
    "Retrieved",
    "read_requests",
    "retrieve",
    "retrieve_request",
    "retrieve_response",
]

ACTION = "urn:ihe:iti:2007:RetrieveDocumentSet"
RESPONSE_ACTION = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"
IHE = "urn:ihe:iti:xds-b:2007"


@dataclass(frozen=True)
class Retrieved:
    unique_id: str
    mime_type: str
    data: bytes


def _text(el: etree._Element, local: str) -> str | None:
    found = el.find(f"{{{IHE}}}{local}")
    return (found.text or "").strip() if found is not None else None


def read_requests(request: etree._Element) -> list[tuple[str | None, str, str]]:
    """(homeCommunityId, repositoryUniqueId, documentUniqueId) of each DocumentRequest."""
    if request.tag != f"{{{IHE}}}RetrieveDocumentSetRequest":
        raise SoapFault("the body of ITI-43 must be a RetrieveDocumentSetRequest")
    result = []
    for doc in request.iterfind(f"{{{IHE}}}DocumentRequest"):
        repository, unique_id = _text(doc, "RepositoryUniqueId"), _text(doc, "DocumentUniqueId")
        if not repository or not unique_id:
            raise SoapFault("DocumentRequest needs RepositoryUniqueId and DocumentUniqueId")
        result.append((_text(doc, "HomeCommunityId"), repository, unique_id))
    if not result:
        raise SoapFault("RetrieveDocumentSetRequest without DocumentRequest")
    return result


def retrieve(
    requests: list[tuple[str | None, str, str]], settings: XdsSettings, store: XdsStore
) -> tuple[list[Retrieved], list[XdsError]]:
    """Blocking: the documents found and an error per document not returned."""
    found, errors = [], []
    for home, repository, unique_id in requests:
        if home not in (None, settings.home):
            errors.append(XdsError("XDSUnknownCommunity", f"homeCommunityId {home} is not this community"))
        elif repository != settings.repository_unique_id:
            errors.append(
                XdsError("XDSUnknownRepositoryId", f"repository {repository} is not this repository")
            )
        elif (content := store.content(unique_id)) is None:
            errors.append(XdsError("XDSDocumentUniqueIdError", f"no document {unique_id}"))
        else:
            found.append(Retrieved(unique_id, *content))
    return found, errors


def retrieve_response(
    found: list[Retrieved], errors: list[XdsError], settings: XdsSettings
) -> tuple[etree._Element, list[tuple[str, bytes]]]:
    """RetrieveDocumentSetResponse with one xop:Include per document, and the MIME parts."""
    el = response_element(registry_response(errors, settings.home, partial=bool(found)))
    parts = []
    for doc in found:
        cid = f"{uuid.uuid4().hex}@xcwado"
        response = DocumentResponse(
            settings.home, settings.repository_unique_id, doc.unique_id, doc.mime_type, cid
        )
        add_document_response(el, response)
        parts.append((cid, doc.data))
    return el, parts


def retrieve_request(documents: list[tuple[str | None, str, str]]) -> etree._Element:
    """A RetrieveDocumentSetRequest for (homeCommunityId or None, repositoryUniqueId, documentUniqueId)."""
    request = etree.Element(f"{{{IHE}}}RetrieveDocumentSetRequest", nsmap={"ihe": IHE})
    for home, repository, unique_id in documents:
        doc = etree.SubElement(request, f"{{{IHE}}}DocumentRequest")
        if home:
            etree.SubElement(doc, f"{{{IHE}}}HomeCommunityId").text = home
        etree.SubElement(doc, f"{{{IHE}}}RepositoryUniqueId").text = repository
        etree.SubElement(doc, f"{{{IHE}}}DocumentUniqueId").text = unique_id
    return request
