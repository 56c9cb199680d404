"""The MCWG adoption checklist, assessed from scenario checks (MCWG adoption checklist, items 1.1 to 3.11).

An item is *supported* when at least one check exercising it held and none failed, *not
supported* when a check exercising it failed, *not tested* when no check of the run exercised it.
Checks of the registry with the architecture count for 1.2.3 (XDS-I.b) when the run's country A keeps
its documents in an XDS registry, for 1.2.5 (XCA-I) when it is architecture B on XCA regions, for 1.2.4
(MHD) otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ncp.errors import InvalidTopology
from ncp.scenario.model import Result
from ncp.topology import builtin_topology, load_topology

__all__ = ["ITEMS", "Assessment", "Evidence", "assess"]

Verdict = Literal["supported", "not supported", "not tested"]

# The dashboard items (IHE-Europe MCWG checklist, paraphrased)
ITEMS: tuple[tuple[str, str], ...] = (
    ("1.1", "Two-level query: broad level-1 keys, then refined query or selection"),
    ("1.2.1", "Architecture A: central registry, distributed PACS/VNAs"),
    ("1.2.2", "Architecture C: central registry and central VNA"),
    ("1.2.3", "XDS-I (SOAP) with the architecture + WADO-RS"),
    ("1.2.4", "MHD (FHIR DocumentReference) with the architecture + WADO-RS"),
    ("1.2.5", "Architecture B: federated regional registries (XCA-I in the MCWG text)"),
    ("1.4", "The imaging study manifest is a DICOM KOS"),
    ("1.7.1", "Requester viewing: native instances copied to the requester"),
    ("1.7.2", "Server-side viewing, central hub option"),
    ("1.7.3", "Server-side viewing, source server option (rendered)"),
    ("1.8", "WIA facade: one DICOMweb base, QIDO-RS from the manifests, WADO-RS onto XC-WADO"),
    ("2.1", "Anatomical region as level-1 key (eventCodeList)"),
    ("2.2", "Study-level modality as level-1 key (eventCodeList)"),
    ("2.5", "Procedure display name for level-2 selection"),
    ("2.6", "Pre-coordinated procedure codes with laterality"),
    ("2.8", "Accession number as targeted key (referenceIdList)"),
    ("2.9", "Study Instance UID as targeted key (referenceIdList)"),
    ("2.14", "referenceIdList carries m-n order / accession / study links"),
    ("2.17", "Manifest publication strategy (case A / case B)"),
    ("3.2.1", "Publication variant A: with the validated report"),
    ("3.2.2", "Publication variant B: at acquisition completion"),
    ("3.4", "National patient ID + issuer as primary Patient ID in the KOS"),
    ("3.5", "Modalities in Study in the evidence sequence"),
    ("3.6.4", "Series Description in the evidence sequence's series items"),
    ("3.9.2", "Retrieve URL (0008,1190) per series"),
    ("3.11", "Significant images per IHE KIN, referenced from the manifest"),
)


@dataclass(frozen=True)
class Evidence:
    scenario: str
    step: str
    check: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Assessment:
    item: str
    text: str
    verdict: Verdict
    evidence: tuple[Evidence, ...]


def assess(results: Sequence[Result]) -> list[Assessment]:
    kinds = {source: _affiliation_kind(source) for source in {r.topology for r in results}}
    out = []
    for item, text in ITEMS:
        evidence = tuple(
            Evidence(r.scenario.id, c.step, c.name, c.ok, c.detail)
            for r in results
            for c in r.checks
            if item in _items(c.mcwg, kinds[r.topology])
        )
        verdict: Verdict = (
            "not tested"
            if not evidence
            else "not supported"
            if any(not e.ok for e in evidence)
            else "supported"
        )
        out.append(Assessment(item, text, verdict, evidence))
    return out


_REGISTRY_ITEM = {"xds": "1.2.3", "xca": "1.2.5"}


def _items(items: tuple[str, ...], kind: str | None) -> tuple[str, ...]:
    """A check of the registry with the architecture (1.2.4, MHD) is evidence for 1.2.3 (XDS-I.b) when
    the documents it found are in an XDS registry, for 1.2.5 (XCA-I) when in XCA communities: the
    country's national side is XDS or XCA, behind the MHD facade its gateway asks (docs/xds.md, xca.md)."""
    replaced = _REGISTRY_ITEM.get(kind or "")
    return tuple(replaced if replaced and i == "1.2.4" else i for i in items)


def _affiliation_kind(source: str) -> str | None:
    """``xds`` or ``xca`` when country A (the topology's first country, where scenarios find documents)
    keeps them in registries of that kind, else None."""
    if not source:
        return None
    try:
        topology = (
            builtin_topology(source.removeprefix("builtin:"))
            if source.startswith("builtin:")
            else load_topology(source)
        )
    except (InvalidTopology, OSError):  # a run whose topology file is gone: nothing says XDS
        return None
    kinds = {r.kind for r in next(iter(topology.countries.values())).registries}
    return next((k for k in _REGISTRY_ITEM if kinds == {k}), None)
