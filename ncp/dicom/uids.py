"""UID syntax checks (PS3.5 §9.1) and deterministic UID generation under the ``2.25`` root.

Every UID that reaches a file path, a URL path or an upstream call goes through
:func:`validate_uid` first.
"""

from __future__ import annotations

import hashlib
import re
import uuid

from ncp.errors import InvalidRequest

__all__ = ["deterministic_uid", "is_valid_uid", "validate_oid", "validate_uid"]

# PS3.5 §9.1: components of digits separated by '.', no leading zero in a multi-digit
# component, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))+$")


def is_valid_uid(value: str) -> bool:
    return len(value) <= 64 and _UID.fullmatch(value) is not None


def validate_uid(value: str, name: str = "UID") -> str:
    """Return ``value`` if it is a syntactically valid DICOM UID, else raise InvalidRequest."""
    if not is_valid_uid(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise InvalidRequest(f"{name} {shown!r} is not a valid DICOM UID (PS3.5 9.1)")
    return value


def validate_oid(value: str, name: str = "OID") -> str:
    """An ISO OID as used for homeCommunityId and issuers: the same syntax, any length."""
    if _UID.fullmatch(value) is None:
        raise InvalidRequest(f"{name} {value!r} is not a valid OID")
    return value


def deterministic_uid(*parts: object) -> str:
    """A ``2.25.<uuid-as-integer>`` UID derived from ``parts`` (PS3.5 B.2): same input, same UID."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return f"2.25.{uuid.UUID(bytes=digest[:16]).int}"
