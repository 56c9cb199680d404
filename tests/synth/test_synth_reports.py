"""Imaging reports: a structurally valid PDF 1.4 and a FHIR R4 document Bundle."""

from __future__ import annotations

import dataclasses
import re

import pytest
from fhir.resources.R4B.bundle import Bundle
from synth_helpers import pdf_objects

from ncp.model import ReportRecord
from ncp.synth import CountryData, fhir_report_document, render_pdf


@pytest.fixture(scope="module")
def final(fr: CountryData) -> ReportRecord:
    return next(r for r in fr.reports if r.status == "final")


@pytest.fixture(scope="module")
def preliminary(fr: CountryData) -> ReportRecord:
    return next(r for r in fr.reports if r.status == "preliminary")


def test_pdf_is_version_1_4_with_an_eof_marker(final: ReportRecord) -> None:
    pdf = render_pdf(final)
    assert pdf.startswith(b"%PDF-1.4\n")
    assert pdf.endswith(b"%%EOF\n")


def test_pdf_xref_offsets_point_at_their_objects(final: ReportRecord) -> None:
    pdf = render_pdf(final)
    offsets = pdf_objects(pdf)
    assert sorted(offsets) == list(range(1, len(offsets) + 1))
    for number, offset in offsets.items():
        assert pdf[offset:].startswith(b"%d 0 obj\n" % number), number
    size = int(re.search(rb"/Size (\d+)", pdf).group(1))  # type: ignore[union-attr]
    assert size == len(offsets) + 1


def test_pdf_stream_lengths_are_exact(final: ReportRecord) -> None:
    pdf = render_pdf(final)
    streams = list(re.finditer(rb"<< /Length (\d+) >>\nstream\n", pdf))
    assert streams
    for match in streams:
        end = match.end() + int(match.group(1))
        assert pdf[end:].startswith(b"\nendstream\nendobj\n")


def test_pdf_shows_patient_study_procedure_findings_conclusion_status(final: ReportRecord) -> None:
    pdf = render_pdf(final)
    study = final.study

    def shown(text: str) -> bool:
        escaped = text.encode("cp1252").replace(b"(", b"\\(").replace(b")", b"\\)")
        return escaped in pdf

    assert shown(study.patient.family.upper()) and shown(study.patient.id)
    assert shown(study.study_instance_uid) and shown(study.procedure.display)
    assert shown(final.conclusion)
    assert shown(final.findings.split(".")[0])
    assert shown("Status: final (validated)")
    assert b"/Type /Catalog" in pdf and b"/BaseFont /Helvetica" in pdf


def test_preliminary_report_says_so(preliminary: ReportRecord) -> None:
    assert b"Status: preliminary \\(not yet validated\\)" in render_pdf(preliminary)


def test_long_reports_flow_onto_more_pages(final: ReportRecord) -> None:
    long = dataclasses.replace(final, findings=" ".join(["Unremarkable appearance of the organ."] * 300))
    pdf = render_pdf(long)
    pages = int(re.search(rb"/Type /Pages /Kids \[[^\]]*\] /Count (\d+)", pdf).group(1))  # type: ignore[union-attr]
    assert pages >= 3
    offsets = pdf_objects(pdf)
    assert all(pdf[o:].startswith(b"%d 0 obj" % n) for n, o in offsets.items())


def test_pdf_bytes_are_deterministic(fr: CountryData) -> None:
    assert [render_pdf(r) for r in fr.reports] == [render_pdf(r) for r in fr.reports]
    assert len({render_pdf(r) for r in fr.reports}) == len(fr.reports)


def test_every_report_bundle_validates_as_fhir_r4(fr: CountryData) -> None:
    for report in fr.reports:
        Bundle.model_validate(fhir_report_document(report))


def test_bundle_is_a_document_composition_first_with_resolvable_references(final: ReportRecord) -> None:
    doc = fhir_report_document(final)
    assert doc["type"] == "document" and doc["identifier"]["value"] and doc["timestamp"] == final.issued
    types = [e["resource"]["resourceType"] for e in doc["entry"]]
    assert types[0] == "Composition"
    assert {"DiagnosticReport", "Patient", "Practitioner", "Organization"} <= set(types)
    full_urls = {e["fullUrl"] for e in doc["entry"]}
    references = re.findall(r"'reference': '([^']+)'", str(doc))
    assert references and set(references) <= full_urls


def test_diagnostic_report_names_the_study_and_its_requests(final: ReportRecord) -> None:
    doc = fhir_report_document(final)
    report = next(e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "DiagnosticReport")
    study = final.study
    assert report["imagingStudy"] == [
        {
            "type": "ImagingStudy",
            "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{study.study_instance_uid}"},
            "display": study.description,
        }
    ]
    identifiers = {ref["identifier"]["value"] for ref in report["basedOn"]}
    assert identifiers == {r.accession_number for r in study.requests} | {
        r.placer_order_number for r in study.requests
    }
    assert report["code"]["coding"][0]["code"] == study.procedure.code
    assert report["conclusion"] == final.conclusion and report["status"] == "final"
    patient = next(e["resource"] for e in doc["entry"] if e["resource"]["resourceType"] == "Patient")
    assert patient["identifier"][0] == {
        **patient["identifier"][0],
        "system": f"urn:oid:{study.patient.issuer}",
        "value": study.patient.id,
    }


def test_composition_status_follows_the_report(final: ReportRecord, preliminary: ReportRecord) -> None:
    for report in (final, preliminary):
        composition = fhir_report_document(report)["entry"][0]["resource"]
        assert composition["status"] == report.status
        assert composition["type"]["coding"][0]["code"] == "85430-7"
        assert [s["title"] for s in composition["section"]] == ["Findings", "Conclusion"]
        assert ("attester" in composition) == (report.status == "final")
