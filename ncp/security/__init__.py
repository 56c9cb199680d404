"""Security building blocks (docs/architecture.md, "Security").

- :mod:`ncp.security.pki`: federation test PKI, mutual-TLS contexts for border listeners, peer certificate
  in the ASGI scope, peer -> country by registered fingerprint, token signing keys.
- :mod:`ncp.security.tokens`: HCP / treatment-context JWTs, NCP assertions, the pinned-algorithm verifier.
- :mod:`ncp.security.audit`: BALP AuditEvents in a durable SQLite store, searched and read over FHIR by
  auditors only.
"""

from __future__ import annotations

__all__: list[str] = []
