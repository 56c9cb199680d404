"""Shared fixtures: real servers on loopback (uvicorn in a thread), never mocks of our own roles."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest

from ncp.server import serve_in_thread


@pytest.fixture
def serve() -> Iterator[Callable[..., str]]:
    """``serve(app, **uvicorn_options) -> base URL``; every server stops at the end of the test."""
    with ExitStack() as stack:

        def start(app: Any, **options: Any) -> str:
            return stack.enter_context(serve_in_thread(app, **options))

        yield start
