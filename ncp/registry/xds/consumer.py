"""An XDS.b Document Consumer over SOAP 1.2 HTTP: ITI-18 Registry Stored Query, ITI-43 Retrieve Document Set.

What the MHD facade (``mhd``) uses to reach its registry and repository: real SOAP messages on
the wire, never the registry's Python functions. Failures of the XDS side become the errors of
``ncp.errors`` that the facade turns into OperationOutcomes: unreachable 502, too slow 504, busy 503
(``XDSRegistryBusy``, ``XDSRepositoryBusy``), a document the repository no longer holds 404
(``XDSDocumentUniqueIdError``, ITI TF-2b 3.43.4.2.3); anything else the XDS side refuses is 502 naming
its error codes, since the facade built the request and the client's input was already checked.

XUA (ITI-40): an assertion the caller hands over in the ``X-XUA-Assertion`` header (base64, from NCP-A's
responding gateway) travels in the ``wsse:Security`` header of every SOAP message, never as HTTP header;
one that cannot be read is the caller's error (400).
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from lxml import etree

from ncp.errors import InvalidRequest, NotFound, Unavailable, UpstreamError
from ncp.registry.xds import iti18, iti43
from ncp.registry.xds.ebrim import FAILURE, RS, DocumentEntry, XdsError, read_document_entry, rim
from ncp.security import xua
from ncp.soapcore import Envelope, SoapFault, binary_content, post_soap, registry_errors

__all__ = ["XdsConsumer", "soap_headers"]

_BUSY = frozenset({"XDSRegistryBusy", "XDSRepositoryBusy", "XDSRegistryNotAvailable"})
_EXTRINSIC_OBJECT = rim("ExtrinsicObject")


class XdsConsumer:
    """One registry and its repository, reached with the caller's pooled HTTP client."""

    def __init__(
        self, client: httpx.AsyncClient, registry_url: str, repository_url: str, *, max_bytes: int
    ) -> None:
        self.client = client
        self.registry_url = registry_url
        self.repository_url = repository_url
        self.max_bytes = max_bytes

    async def query(
        self,
        query_id: str,
        params: list[tuple[str, str | list[str]]],
        headers: Mapping[str, str] | None = None,
    ) -> list[DocumentEntry]:
        """ITI-18 with ``LeafClass`` results: the DocumentEntries found."""
        request = iti18.stored_query_request(query_id, params)
        env = await self._call(self.registry_url, request, iti18.ACTION, headers)
        if env.body.tag != f"{{{iti18.QUERY}}}AdhocQueryResponse":
            raise UpstreamError("the XDS registry answered ITI-18 without an AdhocQueryResponse")
        if env.body.get("status") == FAILURE:
            raise _refused("registry", env.body)
        try:
            return [read_document_entry(el) for el in env.body.iter(_EXTRINSIC_OBJECT)]
        except XdsError as exc:  # metadata we cannot read is the registry's fault, not the client's
            raise UpstreamError(f"the XDS registry answered unreadable metadata ({exc})") from None

    async def retrieve(self, entry: DocumentEntry, headers: Mapping[str, str] | None = None) -> bytes:
        """ITI-43 of one document, by the repository and uniqueId its entry names."""
        home = entry.home_community_id or None
        request = iti43.retrieve_request([(home, entry.repository_unique_id, entry.unique_id)])
        env = await self._call(self.repository_url, request, iti43.ACTION, headers)
        for response in env.body.iterfind(f"{{{iti43.IHE}}}DocumentResponse"):
            unique_id = response.findtext(f"{{{iti43.IHE}}}DocumentUniqueId", "").strip()
            document = response.find(f"{{{iti43.IHE}}}Document")
            if unique_id == entry.unique_id and document is not None:
                try:
                    return binary_content(document, env.attachments)
                except SoapFault as fault:
                    raise UpstreamError(f"the XDS repository sent an unreadable document ({fault})") from None
        status = env.body.find(f"{{{RS}}}RegistryResponse")
        raise _refused("repository", status if status is not None else env.body)

    async def _call(
        self, url: str, body: etree._Element, action: str, headers: Mapping[str, str] | None
    ) -> Envelope:
        out, security = soap_headers(headers or {})
        try:
            return await post_soap(
                self.client, url, body, action, headers=out, max_bytes=self.max_bytes, security=security
            )
        except UpstreamError as exc:  # UpstreamTimeout included
            what = url.rsplit("/", 1)[-1]  # "registry" or "repository"
            raise type(exc)(f"the XDS {what} {exc.message}") from None


def soap_headers(headers: Mapping[str, str]) -> tuple[dict[str, str], etree._Element | None]:
    """The HTTP headers of a SOAP request made for the caller, and the ``wsse:Security`` block of the XUA
    assertion it handed over (ITI TF-2b 3.40.4.1), if any: the assertion travels in SOAP, never as HTTP
    header. An unreadable one is the caller's error (400)."""
    out = {k: v for k, v in headers.items() if k != xua.HEADER}
    value = headers.get(xua.HEADER)
    if value is None:
        return out, None
    try:
        return out, xua.security_header(xua.read_header(value))
    except ValueError as exc:
        raise InvalidRequest(f"{xua.HEADER}: {exc}") from None


def _refused(what: str, response: etree._Element) -> UpstreamError | NotFound:
    """The error of a registry response without the result asked for (ITI TF-3 Table 4.2.4.1-2 codes)."""
    errors = [(code, context) for code, context, _ in registry_errors(response)]
    codes = {code for code, _ in errors}
    text = "; ".join(f"{code}: {context}" for code, context in errors) or "no result and no error"
    if codes & _BUSY:
        return Unavailable(f"the XDS {what} is busy ({text})")
    if codes == {"XDSDocumentUniqueIdError"}:
        return NotFound(f"the XDS {what} does not hold the document ({text})")
    return UpstreamError(f"the XDS {what} refused the request ({text})")
