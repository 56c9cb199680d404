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
    # XUA (ITI-40): (issuer, the certificate pinned for it) pairs; when given, every ITI-18/41/43 message (and
    # ITI-38/39, RAD-75 at a grouped XCA Responding Gateway) must carry a valid assertion addressed to
    # ``xua_audience`` in wsse:Security (docs/xua.md)
    xua_trust: tuple[tuple[str, Path], ...] = ()
    xua_audience: str = ""
    # ITI-41 without an assertion accepted: the Document Source is a system, while XUA asserts the user
    # behind a transaction (ITI TF-2b 3.40); an ITI-41 that does carry one is verified all the same
    xua_system_submissions: bool = False
    audit_db: Path | None = None  # where the XUA users of accepted and refused messages are recorded

    @property
    def home(self) -> str:
        return f"urn:oid:{self.home_community_id}"


def soap_endpoints(fhir_base: str) -> tuple[str, str]:
    """(ITI-18 registry, ITI-41/43 repository) endpoints of an XDS role whose MHD facade is ``fhir_base``:
    both are served on the same listener (``ncp.registry.xds.mhd``)."""
    root = fhir_base.rstrip("/").removesuffix("/fhir")
    return f"{root}/xds/registry", f"{root}/xds/repository"
