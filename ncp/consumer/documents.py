"""What an Imaging Document Consumer reads from an ITI-67 DocumentReference (the MADO envelope)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ncp.codes import ANATOMICAL_REGIONS, DCM, SCT, TYPE_MANIFEST, TYPE_REPORT

__all__ = ["DocumentEntry"]

_STUDY_UID_TYPE = "110180"
_ACCESSION_TYPES = {"ACSN", "121022", "urn:ihe:iti:xds:2013:accession"}
_ORDER_TYPES = {"urn:ihe:iti:xds:2013:order", "PLAC"}
_HCID = "ihe-HomeCommunityId"
_LATERALITY = {"7771000": "L", "24028007": "R", "51440002": "B"}


@dataclass(frozen=True)
class DocumentEntry:
    """One search result, flattened to the level-1 and level-2 keys of MCWG 1.1."""

    id: str
    kind: str  # "manifest", "report" or the raw type code
    status: str
    home_community_id: str | None  # bare OID
    urls: dict[str, str]  # content type -> attachment URL
    study_instance_uid: str | None
    accession_numbers: tuple[str, ...]
    placer_orders: tuple[str, ...]
    modalities: tuple[str, ...]
    regions: tuple[str, ...]  # SNOMED CT codes of the coarse region
    procedures: tuple[str, ...]  # display names (level-2 selection)
    laterality: str | None
    period_start: str | None
    raw: dict[str, Any]

    @classmethod
    def from_resource(cls, res: dict[str, Any]) -> DocumentEntry:
        type_codes = {c.get("code") for c in res.get("type", {}).get("coding", [])}
        kind = (
            "manifest"
            if TYPE_MANIFEST.code in type_codes
            else "report"
            if TYPE_REPORT.code in type_codes
            else ",".join(sorted(str(c) for c in type_codes))
        )
        context = res.get("context", {})
        events = [c for ev in context.get("event", []) for c in ev.get("coding", [])]
        related = [r.get("identifier", {}) for r in context.get("related", [])]
        return cls(
            id=str(res.get("id", "")),
            kind=kind,
            status=str(res.get("status", "")),
            home_community_id=_home_community(res),
            urls={
                c["attachment"].get("contentType", ""): c["attachment"]["url"]
                for c in res.get("content", [])
                if "url" in c.get("attachment", {})
            },
            study_instance_uid=next(
                (_bare(i.get("value", "")) for i in related if _STUDY_UID_TYPE in _type_codes(i)), None
            ),
            accession_numbers=tuple(i.get("value", "") for i in related if _ACCESSION_TYPES & _type_codes(i)),
            placer_orders=tuple(i.get("value", "") for i in related if _ORDER_TYPES & _type_codes(i)),
            modalities=tuple(
                dict.fromkeys(c["code"] for c in events if c.get("system") == DCM and "code" in c)
            ),
            regions=tuple(
                dict.fromkeys(
                    c["code"]
                    for c in events
                    if c.get("system") == SCT and c.get("code") in ANATOMICAL_REGIONS
                )
            ),
            procedures=tuple(
                c.get("display", "") for c in events if c.get("system") not in (DCM, SCT) and c.get("display")
            ),
            laterality=next((_LATERALITY[c["code"]] for c in events if c.get("code") in _LATERALITY), None),
            period_start=context.get("period", {}).get("start"),
            raw=res,
        )


def _home_community(res: dict[str, Any]) -> str | None:
    for ext in res.get("extension", []):
        if str(ext.get("url", "")).endswith(_HCID):
            value = ext.get("valueOid") or ext.get("valueUri") or ""
            return str(value).removeprefix("urn:oid:") or None
    return None


def _type_codes(identifier: dict[str, Any]) -> set[str]:
    return {str(c.get("code")) for c in identifier.get("type", {}).get("coding", [])}


def _bare(value: str) -> str:
    return value.removeprefix("urn:oid:")
