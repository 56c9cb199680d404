"""Settings of one PACS (Imaging Document Source) role."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ncp.dicom.uids import is_valid_uid
from ncp.errors import InvalidTopology

__all__ = ["PacsSettings"]


@dataclass(frozen=True)
class PacsSettings:
    storage_dir: Path  # PS3.10 files and the SQLite index (created if missing)
    agent: str = "pacs"  # the warn-agent of Warning headers (RFC 7234 5.5)
    max_stow_bytes: int = 1 << 30  # STOW-RS request body bound (413 beyond)
    # Fault injection, the "missing instances" scenario: SOP Instance UIDs the PACS pretends to
    # have lost. Retrievals leave them out and answer 206 with a Warning naming them.
    withhold: frozenset[str] = frozenset()
    # A deliberately broken PACS for negative tests: 200 and no Warning where 206 is due.
    partial_as_ok: bool = False
    max_results: int = 1000  # QIDO-RS page cap when the request gives no smaller limit (PS3.18 8.3.4.4)
    # XDS-I.b (RAD-69, ncp.pacs.rad69): the RepositoryUniqueId this source answers for, its Retrieve
    # Location UID; and its community, checked when a request names one. Without the UID, no RAD-69.
    retrieve_location_uid: str | None = None
    home_community_id: str | None = None

    def __post_init__(self) -> None:
        if self.max_stow_bytes <= 0:
            raise InvalidTopology(f"pacs.max_stow_bytes must be positive, got {self.max_stow_bytes}")
        if self.max_results <= 0:
            raise InvalidTopology(f"pacs.max_results must be positive, got {self.max_results}")
        bad = sorted(u for u in self.withhold if not is_valid_uid(u))
        if bad:
            raise InvalidTopology(f"pacs.withhold holds invalid SOP Instance UIDs: {bad[:5]}")
        if not self.agent or any(c.isspace() for c in self.agent):
            raise InvalidTopology(f"pacs.agent must be a non-empty token, got {self.agent!r}")
