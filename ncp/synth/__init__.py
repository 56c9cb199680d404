"""Deterministic synthetic data: patients, orders, studies, instances, reports (ARCHITECTURE §3)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset

from ncp.model import PatientRecord, ReportRecord, StudyRecord
from ncp.synth.catalogue import build_catalogue
from ncp.synth.external import instances_for_manifest
from ncp.synth.images import study_instances
from ncp.synth.reports import fhir_report_document, render_pdf
from ncp.topology import Topology

__all__ = [
    "CountryData",
    "catalogue_json",
    "fhir_report_document",
    "instances_for_manifest",
    "render_pdf",
    "synthesize",
]


@dataclass(frozen=True)
class CountryData:
    country: str
    patients: tuple[PatientRecord, ...]
    studies: tuple[StudyRecord, ...]
    reports: tuple[ReportRecord, ...]
    instance_kb: int

    def instances(self, study: StudyRecord) -> Iterator[Dataset]:
        """The study's instances, generated one at a time (same seed, same bytes)."""
        return study_instances(study, self.instance_kb)

    def report(self, study: StudyRecord) -> ReportRecord | None:
        return next((r for r in self.reports if r.study.study_instance_uid == study.study_instance_uid), None)


def synthesize(topology: Topology, country: str, *, retrieve_urls: Mapping[str, str]) -> CountryData:
    """``retrieve_urls``: Retrieve Location UID -> WADO-RS base URI, written into the manifests."""
    patients, studies, reports = build_catalogue(topology, country, retrieve_urls)
    return CountryData(country, patients, studies, reports, topology.synth.instance_kb)


def catalogue_json(data: CountryData) -> list[dict[str, Any]]:
    """The state file's catalogue entries for one country (ARCHITECTURE §8, contract)."""
    return [
        {
            "country": patient.country,
            "id": patient.id,
            "issuer": patient.issuer,
            "studies": [_study_json(s) for s in data.studies if s.patient == patient],
        }
        for patient in data.patients
    ]


def _study_json(study: StudyRecord) -> dict[str, Any]:
    return {
        "study_instance_uid": study.study_instance_uid,
        "accession_number": study.accession_number or study.requests[0].accession_number,
        "accession_numbers": sorted({r.accession_number for r in study.requests}),
        "placer_orders": sorted({r.placer_order_number for r in study.requests}),
        "modalities": list(study.modalities),
        "anatomical_region": study.anatomical_region.code,
        "procedure": study.procedure.display,
        "laterality": study.laterality,
        "publication": study.publication,
        "manifest_sop_instance_uid": study.manifest_sop_instance_uid,
        "key_images": [i.sop_instance_uid for i in study.key_images],
        "series": [
            {
                "series_instance_uid": s.series_instance_uid,
                "retrieve_location_uid": s.retrieve_location_uid,
                "modality": s.modality,
                "instances": len(s.instances),
                "sop_instance_uids": [i.sop_instance_uid for i in s.instances],
            }
            for s in study.series
        ],
    }
