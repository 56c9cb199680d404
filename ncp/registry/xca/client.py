"""The Initiating Gateway's SOAP 1.2 client: one request, one bounded answer, failures as ncp.errors.

Written here rather than borrowed from ``ncp.registry.xds.consumer`` (whose exchange is private): what
a Responding Gateway did wrong must be reported per community, so every failure is an UpstreamError
(UpstreamTimeout when it was too slow) whose message says what happened.
"""

from __future__ import annotations

from collections.abc import Mapping

import httpx
from lxml import etree

from ncp.errors import UpstreamError, UpstreamTimeout
from ncp.registry.xds.soap import Envelope, SoapFault, parse_message, q, soap_message

__all__ = ["exchange"]


async def exchange(
    client: httpx.AsyncClient,
    url: str,
    body: etree._Element,
    action: str,
    *,
    headers: Mapping[str, str],
    max_bytes: int,
) -> Envelope:
    """POST one SOAP request and read the answer (plain or MTOM); a SOAP Fault is an UpstreamError."""
    message = soap_message(body, action=action, to=url)
    out = {**headers, "content-type": message.content_type}
    try:
        async with client.stream("POST", url, content=message.body, headers=out) as response:
            data = await _bounded(response, max_bytes)
            content_type = response.headers.get("content-type", "")
    except httpx.TimeoutException:
        raise UpstreamTimeout("did not answer in time") from None
    except httpx.HTTPError as exc:
        raise UpstreamError(f"unreachable ({type(exc).__name__})") from None
    try:
        env = parse_message(content_type, data, max_part_bytes=max_bytes)
    except SoapFault as fault:
        raise UpstreamError(f"answered no readable SOAP message ({fault})") from None
    if env.body.tag == q("s", "Fault"):
        reason = env.body.findtext(f"{q('s', 'Reason')}/{q('s', 'Text')}", "")
        raise UpstreamError(f"answered a SOAP Fault: {reason}")
    return env


async def _bounded(response: httpx.Response, limit: int) -> bytes:
    chunks, size = [], 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > limit:
            raise UpstreamError(f"answered more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
