"""FHIR search values as data, never syntax (FHIR R4 search 3.1.1.5.7 "Escaping Search Parameters").

In a search value ``,`` separates alternatives (OR), ``|`` separates a token's system from its code and
``$`` separates composite parts; a backslash escapes each of them and itself. An identifier taken from a
token, a path or a form is therefore escaped before it goes into a search (:func:`escape`), and a value
received is read with the same rules everywhere (:func:`split_alternatives`, :func:`split_token`), so the
gateway that checks a patient and the registry that searches for it can never read one value two ways.
"""

from __future__ import annotations

from ncp.errors import InvalidRequest

__all__ = ["escape", "split_alternatives", "split_token", "token", "unescape"]

_SPECIAL = "\\,$|"
MAX_ALTERNATIVES = 100  # per parameter: keeps every query far below SQLite's bound on SQL variables


def escape(value: str) -> str:
    """``value`` as one literal search value: ``\\`` ``,`` ``$`` ``|`` each preceded by a backslash."""
    return "".join("\\" + ch if ch in _SPECIAL else ch for ch in value)


def token(system: str, code: str) -> str:
    """A token search value ``system|code`` that matches exactly this system and code."""
    return f"{escape(system)}|{escape(code)}"


def split_alternatives(name: str, value: str) -> list[str]:
    """Split on unescaped commas; escapes stay in place for :func:`split_token`."""
    if not value:
        raise InvalidRequest(f"search parameter {name!r} has an empty value")
    parts, current, escaped = [], "", False
    for ch in value:
        if escaped:
            current += "\\" + ch
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            parts.append(current)
            current = ""
        else:
            current += ch
    if escaped:  # FHIR R4 search, "Escaping Search Parameters": a backslash itself is written "\\"
        raise InvalidRequest(f"search parameter {name!r} ends with a lone escape character")
    parts.append(current)
    if len(parts) > MAX_ALTERNATIVES:
        raise InvalidRequest(f"search parameter {name!r}: at most {MAX_ALTERNATIVES} comma-separated values")
    return parts


def split_token(name: str, value: str) -> tuple[str | None, str | None]:
    """One alternative -> (system, code), unescaped: ``system|code`` both, ``|code`` system '',
    ``code`` any system (None), ``system|`` any code (None)."""
    system: str | None = None
    code = value
    split = _unescaped_bar(value)
    if split >= 0:
        system, code = value[:split], value[split + 1 :]
    system = unescape(system) if system is not None else None
    code = unescape(code)
    if not code and not system:
        raise InvalidRequest(f"search parameter {name!r} has an empty token {value!r}")
    return system, code or None


def unescape(value: str) -> str:
    out, escaped = "", False
    for ch in value:
        if escaped or ch != "\\":
            out += ch
            escaped = False
        else:
            escaped = True
    return out


def _unescaped_bar(value: str) -> int:
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "|":
            return i
    return -1
