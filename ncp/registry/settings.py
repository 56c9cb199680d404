"""Settings of one registry role (national registry, or a regional one in architecture B)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["RegistrySettings"]


@dataclass(frozen=True)
class RegistrySettings:
    db_path: Path  # the SQLite file (created with its folder if missing)
    public_base_url: str  # e.g. http://127.0.0.1:PORT/fhir: attachment URLs and paging links
    home_community_id: str  # bare OID, written into the ihe-HomeCommunityId extension
    max_bundle_bytes: int = 64 * 1024 * 1024  # ITI-65 body bound (413 beyond)
    default_page_size: int = 100  # ITI-67 page size without _count
    max_page_size: int = 1000  # larger _count values are lowered to this (FHIR search 3.1.1.5.4)
