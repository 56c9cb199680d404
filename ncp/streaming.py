"""A streamed answer that costs one small task per response, not an anyio task group.

Starlette's ``StreamingResponse`` (ASGI spec 2.3, which uvicorn speaks) runs the body in a task of an anyio
task group and listens for the client's disconnect beside it, so that a client that leaves stops the
stream: a task, a cancel scope and their bookkeeping on every answer, about 5 % of a gateway's CPU per image
request (docs/benchmarks.md, "Per-request costs, round 2"). :class:`StreamedResponse` keeps that
guarantee with plain asyncio: the body is sent from the request's own task and a small watcher task cancels
it when the disconnect comes. Behaviour is otherwise Starlette's (headers, background task, str chunks).
"""

from __future__ import annotations

import asyncio

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

__all__ = ["StreamedResponse"]


class StreamedResponse(StreamingResponse):
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)
            return
        me = asyncio.current_task()
        assert me is not None
        left = False

        async def watch() -> None:
            nonlocal left
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # e.g. BodyTimeout's 408 on a body that never came: no disconnect to see
                return
            left = True
            me.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            # the watcher's cancellation ends the stream quietly, as Starlette's task group does; any
            # other (server shutdown, a timeout around us) goes on
            if not left or me.uncancel() > 0:
                raise
        finally:
            watcher.cancel()
        if self.background is not None:
            await self.background()
