"""XDS-I.b / XCA-I retrieve messages, shared by the Imaging Document Source (RAD-69, ncp.pacs.rad69) and
the imaging gateways (RAD-69 in, RAD-75 out and back, ncp.registry.xca.rad75).

Request (RAD TF-3 4.69.4.1.2, schema ``IHEXDSIB.xsd``): ``iherad:RetrieveImagingDocumentSetRequest``,
StudyRequest@studyInstanceUID > SeriesRequest@seriesInstanceUID > DocumentRequest, all three in the
``iherad`` namespace (the schema's local elements are qualified), holding ``xdsb:HomeCommunityId``?,
``xdsb:RepositoryUniqueId``, ``xdsb:DocumentUniqueId`` (= the SOP Instance UID); then
TransferSyntaxUIDList. RAD-75 carries the same element (RAD TF-3 4.75.4.1.2). The answer of both is
ITI-43's ``xdsb:RetrieveDocumentSetResponse`` (ITI TF-2b 3.43.4.2.2), one DocumentResponse per instance,
its Document an xop:Include: the XDS.b repository writes its ITI-43 answers with the same writer
(:func:`response_element`, :func:`add_document_response`; ncp.registry.xds.iti43).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

from lxml import etree

from ncp.soapcore import NS, RS, SoapFault, q

__all__ = [
    "IHERAD",
    "RAD69_ACTION",
    "RAD75_ACTION",
    "RAD75_RESPONSE_ACTION",
    "RETRIEVE_RESPONSE_ACTION",
    "XDSB",
    "DocumentRequest",
    "DocumentResponse",
    "ImagingRequest",
    "add_document_response",
    "read_document_responses",
    "read_request",
    "request_element",
    "response_element",
]

IHERAD = "urn:ihe:rad:xdsi-b:2009"
XDSB = "urn:ihe:iti:xds-b:2007"
RAD69_ACTION = "urn:ihe:rad:2009:RetrieveImagingDocumentSet"
RETRIEVE_RESPONSE_ACTION = "urn:ihe:iti:2007:RetrieveDocumentSetResponse"  # RAD-69's answer (ITI-43's)
RAD75_ACTION = "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSet"
RAD75_RESPONSE_ACTION = "urn:ihe:rad:2011:CrossGatewayRetrieveImagingDocumentSetResponse"


@dataclass(frozen=True)
class DocumentRequest:
    study: str
    series: str
    home: str | None
    repository: str
    sop: str


@dataclass(frozen=True)
class ImagingRequest:
    documents: tuple[DocumentRequest, ...]
    transfer_syntaxes: tuple[str, ...]


@dataclass(frozen=True)
class DocumentResponse:
    home: str | None
    repository: str
    unique_id: str
    mime_type: str
    content_id: str


def _text(el: etree._Element, local: str) -> str | None:
    found = el.find(f"{{{XDSB}}}{local}")
    return (found.text or "").strip() or None if found is not None else None


def read_request(body: etree._Element) -> ImagingRequest:
    """The request's documents, in order; a message the schema refuses is a Sender Fault."""
    if body.tag != f"{{{IHERAD}}}RetrieveImagingDocumentSetRequest":
        raise SoapFault("the body must be an iherad:RetrieveImagingDocumentSetRequest")
    documents = []
    for study in body.iterfind(f"{{{IHERAD}}}StudyRequest"):
        for series in study.iterfind(f"{{{IHERAD}}}SeriesRequest"):
            for doc in series.iterfind(f"{{{IHERAD}}}DocumentRequest"):
                repository, sop = _text(doc, "RepositoryUniqueId"), _text(doc, "DocumentUniqueId")
                study_uid, series_uid = study.get("studyInstanceUID"), series.get("seriesInstanceUID")
                if not (repository and sop and study_uid and series_uid):
                    raise SoapFault("a DocumentRequest without study, series, repository or document UID")
                documents.append(
                    DocumentRequest(study_uid, series_uid, _text(doc, "HomeCommunityId"), repository, sop)
                )
    syntaxes = tuple(
        (ts.text or "").strip()
        for ts in body.iterfind(f"{{{IHERAD}}}TransferSyntaxUIDList/{{{IHERAD}}}TransferSyntaxUID")
    )
    if not documents or not syntaxes or not all(syntaxes):
        raise SoapFault("RAD-69 needs at least one DocumentRequest and one TransferSyntaxUID")
    return ImagingRequest(tuple(documents), syntaxes)


def request_element(request: ImagingRequest) -> etree._Element:
    """The request element, documents grouped by study then series in first-seen order."""
    root = etree.Element(
        f"{{{IHERAD}}}RetrieveImagingDocumentSetRequest", nsmap={"iherad": IHERAD, "xdsb": XDSB}
    )
    studies: dict[str, etree._Element] = {}
    series: dict[tuple[str, str], etree._Element] = {}
    for doc in request.documents:
        if doc.study not in studies:
            studies[doc.study] = etree.SubElement(
                root, f"{{{IHERAD}}}StudyRequest", studyInstanceUID=doc.study
            )
        key = (doc.study, doc.series)
        if key not in series:
            series[key] = etree.SubElement(
                studies[doc.study], f"{{{IHERAD}}}SeriesRequest", seriesInstanceUID=doc.series
            )
        el = etree.SubElement(series[key], f"{{{IHERAD}}}DocumentRequest")
        if doc.home:
            etree.SubElement(el, f"{{{XDSB}}}HomeCommunityId").text = doc.home
        etree.SubElement(el, f"{{{XDSB}}}RepositoryUniqueId").text = doc.repository
        etree.SubElement(el, f"{{{XDSB}}}DocumentUniqueId").text = doc.sop
    syntaxes = etree.SubElement(root, f"{{{IHERAD}}}TransferSyntaxUIDList")
    for ts in request.transfer_syntaxes:
        etree.SubElement(syntaxes, f"{{{IHERAD}}}TransferSyntaxUID").text = ts
    return root


def response_element(registry_response: etree._Element) -> etree._Element:
    """An ``xdsb:RetrieveDocumentSetResponse`` holding ``registry_response``; DocumentResponses follow."""
    root = etree.Element(
        f"{{{XDSB}}}RetrieveDocumentSetResponse", nsmap={"xdsb": XDSB, "rs": RS, "xop": NS["xop"]}
    )
    root.append(registry_response)
    return root


def add_document_response(root: etree._Element, doc: DocumentResponse) -> None:
    """One DocumentResponse (ITI TF-2b 3.43.4.2.2 order: HomeCommunityId?, RepositoryUniqueId,
    DocumentUniqueId, mimeType, Document) whose Document is an xop:Include of ``doc.content_id``."""
    el = etree.SubElement(root, f"{{{XDSB}}}DocumentResponse")
    if doc.home:
        etree.SubElement(el, f"{{{XDSB}}}HomeCommunityId").text = doc.home
    etree.SubElement(el, f"{{{XDSB}}}RepositoryUniqueId").text = doc.repository
    etree.SubElement(el, f"{{{XDSB}}}DocumentUniqueId").text = doc.unique_id
    etree.SubElement(el, f"{{{XDSB}}}mimeType").text = doc.mime_type
    document = etree.SubElement(el, f"{{{XDSB}}}Document")
    etree.SubElement(document, q("xop", "Include"), href=f"cid:{doc.content_id}")


def read_document_responses(root: etree._Element) -> list[DocumentResponse]:
    """The DocumentResponses of an answer; each must carry its document as an xop:Include."""
    if root.tag != f"{{{XDSB}}}RetrieveDocumentSetResponse" or root.find(f"{{{RS}}}RegistryResponse") is None:
        raise SoapFault("the answer is not a RetrieveDocumentSetResponse")
    found = []
    for el in root.iterfind(f"{{{XDSB}}}DocumentResponse"):
        include = el.find(f"{{{XDSB}}}Document/{q('xop', 'Include')}")
        href = unquote(include.get("href", "")) if include is not None else ""
        repository, unique_id = _text(el, "RepositoryUniqueId"), _text(el, "DocumentUniqueId")
        if not (href.startswith("cid:") and repository and unique_id):
            raise SoapFault("a DocumentResponse without its ids or an xop:Include")
        found.append(
            DocumentResponse(
                _text(el, "HomeCommunityId"), repository, unique_id,
                _text(el, "mimeType") or "application/dicom", href[4:],
            )
        )  # fmt: skip
    return found
