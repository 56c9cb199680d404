"""The data-plane client serves every consumer: nothing a next hop sets for one request rides on the next."""

from __future__ import annotations

import asyncio

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ncp.gateway.proxy import DataPlane, Timeouts, make_upstream
from ncp.server import serve_in_thread


async def _echo(request: Request) -> Response:
    answer = Response(request.headers.get("cookie", "-"))
    answer.set_cookie("session", "of-the-first-consumer")
    return answer


@pytest.mark.parametrize("client", ["aiohttp", "h1"])
def test_a_cookie_set_by_the_next_hop_is_not_sent_on_later_requests(client: DataPlane) -> None:
    app = Starlette(routes=[Route("/echo", _echo)])

    async def twice(base: str) -> list[bytes]:
        upstream = make_upstream(client, Timeouts())
        seen = []
        try:
            for _ in range(2):
                answer = await upstream.open(f"{base}/echo", {})
                seen.append(b"".join([chunk async for chunk in answer.body]))
                await answer.close()
        finally:
            await upstream.aclose()
        return seen

    with serve_in_thread(app) as base:  # by name: a cookie jar would refuse cookies of an IP address
        first, second = asyncio.run(twice(base.replace("127.0.0.1", "localhost")))

    assert first == b"-"
    assert second == b"-"
