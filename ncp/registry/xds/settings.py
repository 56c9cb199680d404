"""Settings of one XDS.b Document Registry + Repository (an affinity domain of one country or region)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["XdsSettings", "soap_endpoints"]


@dataclass(frozen=True)
class XdsSettings:
    db_path: Path  # the SQLite file (created with its folder if missing)
    home_community_id: str  # bare OID; `home` attributes and RegistryError@location carry urn:oid:<it>
    repository_unique_id: str  # bare OID of the repository (DocumentEntry.repositoryUniqueId)
    patient_id_domain: str  # assigning authority OID of the affinity domain's patient ids
    max_message_bytes: int = 32 * 1024 * 1024  # a whole SOAP/MTOM request (a SOAP Fault beyond)
    max_part_bytes: int = 16 * 1024 * 1024  # one MIME part, i.e. one document

    @property
    def home(self) -> str:
        return f"urn:oid:{self.home_community_id}"


def soap_endpoints(fhir_base: str) -> tuple[str, str]:
    """(ITI-18 registry, ITI-41/43 repository) endpoints of an XDS role whose MHD facade is ``fhir_base``:
    both are served on the same listener (``ncp.registry.xds.mhd``)."""
    root = fhir_base.rstrip("/").removesuffix("/fhir")
    return f"{root}/xds/registry", f"{root}/xds/repository"
