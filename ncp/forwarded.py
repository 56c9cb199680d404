"""Where a consumer reached a chain of proxies: RFC 7239 ``Forwarded`` (host, proto) plus the de facto
``X-Forwarded-Prefix`` (the path), so that URLs a PACS writes into its answers (each part's
Content-Location, PS3.18 8.7.3; Retrieve URLs in metadata) name the consumer's gateway, never an address
inside the responding country.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

__all__ = ["forwarded_headers", "public_base"]

_HOST = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:.]+\](:\d{1,5})?")
_PREFIX = re.compile(r"(/(?!\.\.?(/|$))[A-Za-z0-9._~-]+)*")  # no dot segments
_PAIR = re.compile(r'\s*(\w+)=("[^"]*"|[^;,]*)\s*')


def forwarded_headers(base: str) -> dict[str, str]:
    """The headers that tell the next hop the public ``base`` (``https://host:port/path``)."""
    parts = urlsplit(base)
    return {
        "forwarded": f'host="{parts.netloc}";proto={parts.scheme}',
        "x-forwarded-prefix": parts.path.rstrip("/"),
    }


def public_base(headers: Mapping[str, str]) -> str | None:
    """The public base the headers name, without a trailing slash; None when absent or not plainly
    a host, a scheme and a path (the value is echoed into answers: nothing else may pass)."""
    forwarded, prefix = headers.get("forwarded"), headers.get("x-forwarded-prefix")
    if forwarded is None or prefix is None or "," in forwarded:
        return None
    fields = {}
    for pair in forwarded.split(";"):
        m = _PAIR.fullmatch(pair)
        if m is None:
            return None
        fields[m[1].lower()] = m[2].strip('"')
    host, proto = fields.get("host", ""), fields.get("proto", "")
    if proto not in ("http", "https") or not _HOST.fullmatch(host) or not _PREFIX.fullmatch(prefix):
        return None
    return f"{proto}://{host}{prefix}"
