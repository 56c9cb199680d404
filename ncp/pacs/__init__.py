"""The PACS role (IHE Imaging Document Source): WADO-RS, QIDO-RS and STOW-RS over a file store."""

from __future__ import annotations

from ncp.pacs.app import create_pacs_app
from ncp.pacs.settings import PacsSettings
from ncp.pacs.store import InstanceStore

__all__ = ["InstanceStore", "PacsSettings", "create_pacs_app"]
