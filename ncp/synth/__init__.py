"""Deterministic synthetic data: patients, orders, studies, instances, reports (docs/architecture.md).

``synthesize(topology, country, retrieve_urls=...)`` gives a country's :class:`CountryData`; its
``instances(study)`` are pydicom datasets built one at a time. Reports render as PDF and as a FHIR
document Bundle; ``instances_for_manifest`` synthesises what an external KOS references.
"""

from __future__ import annotations

from ncp.synth.catalogue import CountryData, catalogue_json, synthesize
from ncp.synth.external import instances_for_manifest
from ncp.synth.images import to_part10
from ncp.synth.reports import fhir_report_document, render_pdf

__all__ = [
    "CountryData",
    "catalogue_json",
    "fhir_report_document",
    "instances_for_manifest",
    "render_pdf",
    "synthesize",
    "to_part10",
]
