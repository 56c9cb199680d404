"""Server-side sessions of the portal: the browser holds only an opaque id (HttpOnly, SameSite=Strict).

A session carries the clinician's tokens (never sent to the browser), the CSRF token of its forms
(OWASP synchronizer token pattern), what the clinician found, and the hub's image cache. It ends at the
token's expiry (the treatment context's, once one is open) or at sign-out, and its cache goes with it.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field

from ncp.consumer.documents import DocumentEntry
from ncp.model import Manifest

__all__ = ["ANONYMOUS_TTL_S", "ImageCache", "Patient", "Session", "SessionStore"]

ANONYMOUS_TTL_S = 600.0  # a sign-in form is valid for 10 minutes
_MAX_SESSIONS = 1000
_CACHE_BYTES = 256 * 1024 * 1024  # per session: a few CT series


@dataclass(frozen=True)
class Patient:
    issuer: str
    id: str
    name: str
    birth_date: str
    community: str  # the country that answered identification


class ImageCache:
    """Native instances the hub fetched for one session, least recently used first out past a bound."""

    def __init__(self, limit: int = _CACHE_BYTES) -> None:
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._limit, self.size = limit, 0

    def get(self, key: str) -> bytes | None:
        if key in self._items:
            self._items.move_to_end(key)
        return self._items.get(key)

    def put(self, key: str, data: bytes) -> None:
        if key in self._items:
            return
        self._items[key], self.size = data, self.size + len(data)
        while self.size > self._limit and len(self._items) > 1:
            _, dropped = self._items.popitem(last=False)
            self.size -= len(dropped)

    def clear(self) -> None:
        self._items.clear()
        self.size = 0

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Session:
    id: str
    csrf: str
    expires_at: float
    user: str | None = None
    hcp_token: str | None = None
    treatment_token: str | None = None
    patient: Patient | None = None
    documents: dict[str, DocumentEntry] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)  # by DocumentReference id
    cache: ImageCache = field(default_factory=ImageCache)

    @property
    def bearer(self) -> str | None:
        return self.treatment_token or self.hcp_token

    def csrf_ok(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf.encode())


class SessionStore:
    """Sessions of one portal app (app state, never module-level)."""

    def __init__(self) -> None:
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def new(self) -> Session:
        self._expire()
        session = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), time.time() + ANONYMOUS_TTL_S)
        self._sessions[session.id] = session
        while len(self._sessions) > _MAX_SESSIONS:  # anonymous first: sign-in forms cannot evict clinicians
            idle = next((s.id for s in self._sessions.values() if s.bearer is None), None)
            self._drop(idle or next(iter(self._sessions)))
        return session

    def get(self, session_id: str | None) -> Session | None:
        session = self._sessions.get(session_id or "")
        if session is None:
            return None
        if time.time() >= session.expires_at:
            self._drop(session.id)
            return None
        return session

    def rotate(self, session: Session) -> Session:
        """A new id and CSRF token when the privilege changes (sign-in): a fixed id is worth nothing."""
        self._sessions.pop(session.id, None)
        session.id, session.csrf = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
        self._sessions[session.id] = session
        return session

    def end(self, session: Session) -> None:
        self._drop(session.id)

    def _drop(self, session_id: str) -> None:
        session = self._sessions.pop(session_id, None)
        if session is not None:
            session.cache.clear()
            session.hcp_token = session.treatment_token = None

    def _expire(self) -> None:
        now = time.time()
        for sid in [s.id for s in self._sessions.values() if now >= s.expires_at]:
            self._drop(sid)
