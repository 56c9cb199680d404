"""RAD-69 Retrieve Imaging Document Set at the Imaging Document Source (RAD TF-3 4.69, XDS-I.b).

``POST /xdsi/rad69``, WS-Addressing Action ``urn:ihe:rad:2009:RetrieveImagingDocumentSet``, SOAP 1.2
(ITI TF-2x Appendix V). Mounted when the PACS has a Retrieve Location UID: that UID is the
RepositoryUniqueId it answers for, as a KOS manifest names the source of each series with it
(Retrieve Location UID (0040,E011), XDS-I.b; the same key RAD-160 routes by). A request naming
another repository, another community, or an instance this PACS does not serve gets a RegistryError
for that document (``location`` = its DocumentUniqueId, RAD69-016) and the others are answered:
PartialSuccess. What cannot be read as a request is a SOAP Fault, never a 5xx.

Transfer syntax (RAD TF-3 4.69.4.1.2, TransferSyntaxUIDList): an instance goes as stored when its
syntax is listed, else converted (ncp.pacs.transcode) to the first listed syntax we can produce, else
it is an ``XDSRepositoryError`` naming the syntaxes (our choice of code: the profile names none).

The answer streams (MTOM/XOP, one ``application/dicom`` part per instance, read from its file a chunk
at a time, or transcoded just before its part): the study is never held in memory. The envelope and
the first part are ready before the status line, so a failure there is a RegistryError; a file lost
or a codec failing later aborts the stream, which the client sees as a truncated message.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ncp.dicom.multipart import Part
from ncp.dicom.uids import is_valid_uid
from ncp.errors import NotAcceptable
from ncp.pacs.context import PacsContext
from ncp.pacs.store import StoredInstance
from ncp.pacs.transcode import can_produce, transcode
from ncp.soapcore import (
    Envelope,
    XdsError,
    bounded_endpoint,
    envelope_bytes,
    mtom_stream,
    registry_response,
)
from ncp.xdsi import (
    RAD69_ACTION,
    RETRIEVE_RESPONSE_ACTION,
    DocumentRequest,
    DocumentResponse,
    ImagingRequest,
    add_document_response,
    read_request,
    response_element,
)

__all__ = ["PATH", "rad69_routes"]

PATH = "/xdsi/rad69"
MAX_REQUEST_BYTES = 1 << 20  # a request lists UIDs only: about 5000 instances
_DICOM = "application/dicom"


@dataclass(frozen=True)
class _Planned:
    """An instance to send: as stored (``target`` None) or converted to ``target``."""

    instance: StoredInstance
    target: str | None
    content_id: str


def rad69_routes(ctx: PacsContext) -> list[Route]:
    rluid, hcid = ctx.settings.retrieve_location_uid, ctx.settings.home_community_id
    if rluid is None:
        return []
    source = _Source(f"urn:oid:{hcid}" if hcid else None, rluid)

    async def retrieve(env: Envelope) -> Response:
        return await _answer(ctx, source, read_request(env.body), env.message_id)

    endpoint = bounded_endpoint(
        {RAD69_ACTION: retrieve}, max_message_bytes=MAX_REQUEST_BYTES, max_part_bytes=MAX_REQUEST_BYTES
    )
    return [Route(PATH, endpoint, methods=["POST"])]


@dataclass(frozen=True)
class _Source:
    """Who answers: its homeCommunityId (``urn:oid:``, None without one) and its RepositoryUniqueId."""

    home: str | None
    repository: str


async def _answer(
    ctx: PacsContext, source: _Source, request: ImagingRequest, relates_to: str | None
) -> Response:
    planned, errors = await run_in_threadpool(_plan, ctx, request)
    first: Part | None = None
    while planned and first is None:  # the first part is ready before the 200 (see the module doc)
        try:
            first = await _part(ctx, planned[0])
        except NotAcceptable as exc:
            errors.append(XdsError("XDSRepositoryError", exc.message, planned.pop(0).instance.sop_uid))
    # every error names its document (RAD69-016), so the response's own location is never used
    root = response_element(registry_response(errors, "", partial=bool(planned)))
    for p in planned:
        add_document_response(
            root,
            DocumentResponse(source.home, source.repository, p.instance.sop_uid, _DICOM, p.content_id),
        )
    envelope = envelope_bytes(root, action=RETRIEVE_RESPONSE_ACTION, relates_to=relates_to)
    content_type, chunks = mtom_stream(envelope, _parts(ctx, first, planned[1:]))
    return StreamingResponse(chunks, headers={"content-type": content_type})


async def _parts(ctx: PacsContext, first: Part | None, rest: list[_Planned]) -> AsyncIterator[Part]:
    if first is not None:
        yield first
    for planned in rest:
        yield await _part(ctx, planned)


async def _part(ctx: PacsContext, planned: _Planned) -> Part:
    path, headers = ctx.store.path(planned.instance), {"Content-ID": f"<{planned.content_id}>"}
    if planned.target is None:
        return dataclasses.replace(Part.from_file(path, _DICOM), headers=headers)
    if not path.is_file():  # as rad107 does: a file lost after the answer started aborts it
        raise FileNotFoundError(path)
    data = await run_in_threadpool(transcode, path, planned.target)
    return dataclasses.replace(Part.from_bytes(data, _DICOM), headers=headers)


def _plan(ctx: PacsContext, request: ImagingRequest) -> tuple[list[_Planned], list[XdsError]]:
    """Blocking: each document found and its transfer syntax chosen, or its error (request order)."""
    planned, errors = [], []
    series: dict[tuple[str, str], dict[str, StoredInstance]] = {}
    for doc in request.documents:
        try:
            instance = _locate(ctx, doc, series)
            target = _target(instance, request.transfer_syntaxes)
        except XdsError as error:
            errors.append(error)
            continue
        planned.append(_Planned(instance, target, f"{uuid.uuid4().hex}@xcwado"))
    return planned, errors


def _locate(
    ctx: PacsContext, doc: DocumentRequest, series: dict[tuple[str, str], dict[str, StoredInstance]]
) -> StoredInstance:
    """The stored instance ``doc`` names; the series is looked up once (a study is many documents)."""
    settings = ctx.settings
    if doc.repository != settings.retrieve_location_uid:
        raise XdsError("XDSUnknownRepositoryId", f"repository {doc.repository} is not this source", doc.sop)
    if (
        doc.home
        and settings.home_community_id
        and doc.home.removeprefix("urn:oid:") != settings.home_community_id
    ):
        raise XdsError("XDSUnknownCommunity", f"homeCommunityId {doc.home} is not this community", doc.sop)
    missing = XdsError("XDSDocumentUniqueIdError", f"no instance {doc.sop} in series {doc.series}", doc.sop)
    if not all(is_valid_uid(u) for u in (doc.study, doc.series, doc.sop)):
        raise missing
    key = (doc.study, doc.series)
    if key not in series:
        series[key] = {i.sop_uid: i for i in ctx.store.instances(doc.study, doc.series)}
    instance = series[key].get(doc.sop)
    if instance is None or doc.sop in settings.withhold or not ctx.store.path(instance).is_file():
        raise missing
    return instance


def _target(instance: StoredInstance, syntaxes: tuple[str, ...]) -> str | None:
    """None to send the instance as stored, else the first listed syntax it can be converted to."""
    if instance.transfer_syntax in syntaxes:
        return None
    for ts in syntaxes:
        if is_valid_uid(ts) and can_produce(instance.transfer_syntax, ts, has_pixels=instance.has_pixels):
            return ts
    raise XdsError(
        "XDSRepositoryError",
        f"instance {instance.sop_uid} (stored as {instance.transfer_syntax}) cannot be given in any of "
        f"{' '.join(syntaxes)}",
        instance.sop_uid,
    )
