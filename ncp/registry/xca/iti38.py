"""ITI-38 Cross Gateway Query (ITI TF-2b 3.38): ITI-18's stored queries between communities.

Responding Gateway (3.38.4.1.3): the query runs on the region's own registry; every ExtrinsicObject and
ObjectRef answered carries ``home`` = this community, every RegistryError ``location`` = this community.
A query keyed by ids rather than a patient (GetDocuments) must name the community it is for
(``AdhocQuery@home``, 3.38.4.1.2.1): without it XDSMissingHomeCommunityId; another community is
XDSUnknownCommunity. Initiating Gateway: the request names the community it is sent to.
"""

from __future__ import annotations

from dataclasses import dataclass

from lxml import etree

from ncp.registry.xds import iti18
from ncp.registry.xds.ebrim import FAILURE, DocumentEntry, XdsError, read_document_entry, rim
from ncp.registry.xds.settings import XdsSettings
from ncp.registry.xds.store import XdsStore
from ncp.soapcore import registry_errors

__all__ = ["ACTION", "RESPONSE_ACTION", "QueryAnswer", "read_answer", "request", "respond"]

ACTION = "urn:ihe:iti:2007:CrossGatewayQuery"
RESPONSE_ACTION = "urn:ihe:iti:2007:CrossGatewayQueryResponse"
_ID_QUERIES = frozenset({iti18.GET_DOCUMENTS})  # no patient id: the community must be named


def request(home: str, query_id: str, params: list[tuple[str, str | list[str]]]) -> etree._Element:
    """An AdhocQueryRequest for the community ``home`` (``urn:oid:…``), LeafClass."""
    body = iti18.stored_query_request(query_id, params)
    query = body.find(rim("AdhocQuery"))
    assert query is not None  # stored_query_request always writes it
    query.set("home", home)
    return body


def respond(body: etree._Element, settings: XdsSettings, store: XdsStore) -> etree._Element:
    """Blocking: the AdhocQueryResponse of this community (a SoapFault when the body is no query)."""
    query = None
    try:
        query = iti18.read_query(body)
        if query.query_id in _ID_QUERIES and not query.home:
            raise XdsError(
                "XDSMissingHomeCommunityId", f"stored query {query.query_id} needs AdhocQuery/@home"
            )
        entries = iti18.run_query(query, settings, store)
        return iti18.query_response(entries, query, settings, [])
    except XdsError as error:
        return iti18.query_response([], query, settings, [error])


@dataclass(frozen=True)
class QueryAnswer:
    """What a Responding Gateway answered: its entries and errors as (code, context, location)."""

    entries: list[DocumentEntry]
    errors: list[tuple[str, str, str]]
    failed: bool  # status Failure: no result (PartialSuccess keeps its entries)


def read_answer(body: etree._Element) -> QueryAnswer:
    """An AdhocQueryResponse; unreadable metadata is an XdsError (the answering gateway's fault)."""
    if body.tag != f"{{{iti18.QUERY}}}AdhocQueryResponse":
        raise XdsError("XDSRegistryError", "the answer to ITI-38 is not an AdhocQueryResponse")
    entries = [read_document_entry(el) for el in body.iter(rim("ExtrinsicObject"))]
    return QueryAnswer(entries, registry_errors(body), body.get("status") == FAILURE)
