"""Small helpers over raw ASGI scopes, shared by middlewares of every role (no role package imported)."""

from __future__ import annotations

from starlette.types import Scope

__all__ = ["raw_header"]


def raw_header(scope: Scope, name: bytes) -> str:
    """The first value of header ``name`` (lower case) as sent, "" when absent: no ``Headers`` object built
    on the per-request path."""
    return next((v.decode("latin-1") for k, v in scope["headers"] if k == name), "")
