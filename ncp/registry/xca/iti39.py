"""ITI-39 Cross Gateway Retrieve (ITI TF-2b 3.39): ITI-43 between communities, answered with MTOM/XOP.

Responding Gateway (3.39.4.1.3): every DocumentRequest names the community it is for
(``HomeCommunityId``, required by 3.39.4.1.2): without it XDSMissingHomeCommunityId, another community
XDSUnknownCommunity, then ITI-43's checks on this region's repository; some found and some not is
PartialSuccess. Each error's ``location`` is this community.
"""

from __future__ import annotations

from lxml import etree

from ncp.registry.xds import iti43
from ncp.registry.xds.ebrim import XdsError
from ncp.registry.xds.settings import XdsSettings
from ncp.registry.xds.store import XdsStore
from ncp.soapcore import SoapFault, binary_content

__all__ = ["ACTION", "RESPONSE_ACTION", "document", "request", "respond"]

ACTION = "urn:ihe:iti:2007:CrossGatewayRetrieve"
RESPONSE_ACTION = "urn:ihe:iti:2007:CrossGatewayRetrieveResponse"


def request(home: str, repository: str, unique_id: str) -> etree._Element:
    """A RetrieveDocumentSetRequest for one document of the community ``home``."""
    return iti43.retrieve_request([(home, repository, unique_id)])


def respond(
    body: etree._Element, settings: XdsSettings, store: XdsStore
) -> tuple[etree._Element, list[tuple[str, bytes]]]:
    """Blocking: the RetrieveDocumentSetResponse and its MIME parts (a SoapFault when unreadable)."""
    requests = iti43.read_requests(body)
    named = [r for r in requests if r[0]]
    missing = [
        XdsError("XDSMissingHomeCommunityId", f"DocumentRequest for {unique_id} without HomeCommunityId")
        for home, _, unique_id in requests
        if not home
    ]
    found, errors = iti43.retrieve(named, settings, store)
    return iti43.retrieve_response(found, missing + errors, settings)


def document(body: etree._Element, attachments: dict[str, bytes], unique_id: str) -> bytes | None:
    """The bytes of ``unique_id`` in a RetrieveDocumentSetResponse, None when it is not there."""
    for response in body.iterfind(f"{{{iti43.IHE}}}DocumentResponse"):
        found = response.find(f"{{{iti43.IHE}}}Document")
        if (
            response.findtext(f"{{{iti43.IHE}}}DocumentUniqueId", "").strip() == unique_id
            and found is not None
        ):
            try:
                return binary_content(found, attachments)
            except SoapFault:
                return None
    return None
