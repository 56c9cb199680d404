"""The manifest validator (MCWG checklist §3, MADO constraints), its QIDO-RS resolver and dciodvfy."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from pydicom.dataset import Dataset
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ncp.dicom.dciodvfy import dciodvfy_available, is_mado_value_type_error, parse_output, run_dciodvfy
from ncp.dicom.kos import build_kin, build_manifest, to_part10
from ncp.dicom.validate import ValidationReport, http_resolver, validate_manifest
from ncp.errors import InvalidRequest
from ncp.model import StudyRecord

IHE = Path(__file__).resolve().parents[1] / "data" / "ihe"  # IHE's own MADO samples (CC BY 4.0)


def _series_items(ds: Dataset) -> list[Dataset]:
    return list(ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence)


def _failed(report: ValidationReport) -> list[str]:
    return [c.item for c in report.failed()]


# --------------------------------------------------------------------------- what passes


@pytest.mark.parametrize("encoding", ["MADO", "MCWG"])
def test_built_manifests_pass_every_check(study: StudyRecord, encoding: str) -> None:
    report = validate_manifest(to_part10(build_manifest(study, encoding=encoding)))  # type: ignore[arg-type]
    assert report.ok, report.render()
    assert report.check("3.11").status == "pass"
    assert report.check("3.9.2").status == "pass"


def test_mado_structure_is_checked_only_for_mado(study: StudyRecord) -> None:
    mado = validate_manifest(build_manifest(study, encoding="MADO"))
    mcwg = validate_manifest(build_manifest(study, encoding="MCWG"))
    assert {"MADO-title", "MADO-TID1600", "MADO-groups"} <= {c.item for c in mado.checks}
    assert not any(c.item.startswith("MADO-") for c in mcwg.checks)


@pytest.mark.parametrize(("sample", "key_images"), [("MADO_KOS_A.dcm", "n/a"), ("MADO_KOS_B.dcm", "pass")])
def test_both_ihe_samples_validate(sample: str, key_images: str) -> None:
    """IHE's own manifests pass every check: A references no key object note, B references one."""
    report = validate_manifest((IHE / sample).read_bytes())
    assert report.ok, report.render()
    assert report.manifest is not None and report.manifest.patient_id == "UV59569735"
    assert report.check("MADO-groups").status == "pass"
    assert report.check("3.11").status == key_images


def test_a_kin_is_not_held_to_manifest_only_items(study: StudyRecord) -> None:
    report = validate_manifest(build_kin(study))
    assert report.ok, report.render()
    assert report.check("3.6.4").status == "n/a"


# --------------------------------------------------------------------------- what fails, and is named


def test_series_without_retrieve_url_fails_3_9_2(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    del _series_items(ds)[1].RetrieveURL
    report = validate_manifest(ds)
    assert _failed(report) == ["3.9.2"]
    assert study.series[1].series_instance_uid in report.check("3.9.2").detail


def test_retrieve_url_must_be_http(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MADO")
    _series_items(ds)[0].RetrieveURL = "ftp://pacs/rs"
    assert _failed(validate_manifest(ds)) == ["3.9.2"]


def test_missing_issuer_of_patient_id_fails_3_4(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MADO")
    del ds.IssuerOfPatientID
    report = validate_manifest(ds)
    assert _failed(report) == ["3.4"]
    assert "Issuer of Patient ID" in report.check("3.4").detail


def test_missing_issuer_qualifiers_fail(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    del ds.IssuerOfPatientIDQualifiersSequence
    assert _failed(validate_manifest(ds)) == ["3.4-qualifiers"]
    ds = build_manifest(study, encoding="MCWG")
    ds.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityIDType = "DNS"
    assert _failed(validate_manifest(ds)) == ["3.4-qualifiers"]


def test_missing_series_description_fails_3_6_4(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    del _series_items(ds)[0].SeriesDescription
    assert _failed(validate_manifest(ds)) == ["3.6.4"]


def test_missing_retrieve_location_uid_fails(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    del _series_items(ds)[0].RetrieveLocationUID
    assert _failed(validate_manifest(ds)) == ["6.X.2.14"]


def test_plain_xds_kos_misses_the_mcwg_extensions(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    del evidence.ModalitiesInStudy
    for series in evidence.ReferencedSeriesSequence:
        del series.Modality, series.SeriesDescription
    report = validate_manifest(ds)
    assert report.manifest is not None and report.manifest.encoding == "MCWG"  # instance extensions remain
    assert _failed(report) == ["3.5", "3.6.4"]


def test_flag_pointing_at_an_unreferenced_kin_fails_3_11(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    items = _series_items(ds)
    ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence = items[
        :2
    ]  # drop the KIN series
    ds.ContentSequence = [c for c in ds.ContentSequence if c.ValueType != "COMPOSITE"]
    report = validate_manifest(ds)
    assert _failed(report) == ["3.11"]
    assert str(study.kin_sop_instance_uid) in report.check("3.11").detail


def test_mado_without_image_library_fails(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MADO")
    ds.ContentSequence = [c for c in ds.ContentSequence if c.ValueType != "CONTAINER"]
    # MADO carries modalities and series descriptions only in the library: those go too
    assert _failed(validate_manifest(ds)) == ["3.5", "3.6.4", "MADO-TID1600"]


def test_mado_group_missing_an_instance_fails(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MADO")
    library = next(c for c in ds.ContentSequence if c.ValueType == "CONTAINER")
    group = next(c for c in library.ContentSequence if c.ValueType == "CONTAINER")
    group.ContentSequence = list(group.ContentSequence)[:-1]
    report = validate_manifest(ds)
    assert _failed(report) == ["MADO-groups"]


def _strip_instance_numbers(ds: Dataset, value_type: str) -> None:
    """Remove the Instance Number that precedes each library entry of ``value_type``."""
    library = next(c for c in ds.ContentSequence if c.ValueType == "CONTAINER")
    for group in (c for c in library.ContentSequence if c.ValueType == "CONTAINER"):
        items = list(group.ContentSequence)
        group.ContentSequence = [
            item
            for item, following in zip(items, [*items[1:], None], strict=True)
            if not (_is_instance_number(item) and following is not None and following.ValueType == value_type)
        ]


def _is_instance_number(item: Dataset) -> bool:
    names = item.get("ConceptNameCodeSequence") or []
    return bool(names) and names[0].CodeValue == "113609"


def test_image_entry_without_instance_number_fails(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MADO")
    _strip_instance_numbers(ds, "IMAGE")
    report = validate_manifest(ds)
    assert _failed(report) == ["MADO-groups"]
    assert "no Instance Number for IMAGE entries" in report.check("MADO-groups").detail


def test_evidence_instance_missing_from_content_fails_tid2010(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    ds.ContentSequence = list(ds.ContentSequence)[1:]
    assert _failed(validate_manifest(ds)) == ["TID2010"]


def test_general_study_accession_needs_its_issuer(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MADO")
    del ds.IssuerOfAccessionNumberSequence
    assert _failed(validate_manifest(ds)) == ["6.X.2.6.1"]


def test_request_without_placer_issuer_fails(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MADO")
    del ds.ReferencedRequestSequence[1].OrderPlacerIdentifierSequence
    report = validate_manifest(ds)
    assert _failed(report) == ["6.X.2.8"]
    assert "item 2" in report.check("6.X.2.8").detail


def test_non_kos_input_gives_a_single_failed_check() -> None:
    report = validate_manifest(b"not dicom at all")
    assert not report.ok
    assert _failed(report) == ["KOS"]


def test_render_is_a_table_with_a_verdict(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    del _series_items(ds)[0].RetrieveURL
    text = validate_manifest(ds).render()
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["ITEM", "STATUS", "CHECK"]
    assert any(line.startswith("3.9.2") and " FAIL " in line for line in lines)
    assert lines[-1].startswith("FAILED:") and "1 failed" in lines[-1]


# --------------------------------------------------------------------------- resolving references


def test_resolver_reports_the_missing_instance(study: StudyRecord) -> None:
    gone = study.series[1].instances[2].sop_instance_uid
    report = validate_manifest(
        build_manifest(study, encoding="MADO"), resolve=lambda st, se, sop: sop != gone
    )
    assert _failed(report) == ["resolve"]
    assert gone in report.check("resolve").detail and "1 of 7" in report.check("resolve").detail


def test_resolver_failure_is_a_failed_check_not_a_crash(study: StudyRecord) -> None:
    def broken(study: str, series: str, sop: str) -> bool:
        raise ConnectionError("PACS down")

    report = validate_manifest(build_manifest(study, encoding="MCWG"), resolve=broken)
    assert _failed(report) == ["resolve"]
    assert "PACS down" in report.check("resolve").detail


def _qido_app(holdings: dict[tuple[str, str], list[str]], page: int) -> Starlette:
    """A QIDO-RS instance search (PS3.18 10.6) that lists at most ``page`` instances per answer."""

    async def instances(request: Request) -> Response:
        request.app.state.calls.append(dict(request.query_params))
        uids = holdings.get((request.path_params["study"], request.path_params["series"]))
        if uids is None:
            return Response(status_code=404)
        wanted = request.query_params.get("SOPInstanceUID")
        found = [u for u in uids if u == wanted] if wanted else uids[:page]
        if not found:
            return Response(status_code=204)
        body = [{"00080018": {"vr": "UI", "Value": [u]}} for u in found]
        return JSONResponse(body, media_type="application/dicom+json")

    app = Starlette(routes=[Route("/rs/studies/{study}/series/{series}/instances", instances)])
    app.state.calls = []
    return app


def test_http_resolver_over_qido(study: StudyRecord, serve: Callable[..., str]) -> None:
    holdings = {
        (study.study_instance_uid, s.series_instance_uid): [i.sop_instance_uid for i in s.instances]
        for s in study.series
    }
    app = _qido_app(holdings, page=2)
    base = serve(app) + "/rs/"
    first, second = study.series
    with httpx.Client(timeout=5) as client:
        resolve = http_resolver(base, client)
        assert resolve(
            study.study_instance_uid, first.series_instance_uid, first.instances[0].sop_instance_uid
        )
        assert resolve(
            study.study_instance_uid, first.series_instance_uid, first.instances[1].sop_instance_uid
        )
        # beyond the page: found by the per-instance query
        assert resolve(
            study.study_instance_uid, first.series_instance_uid, first.instances[2].sop_instance_uid
        )
        assert not resolve(study.study_instance_uid, first.series_instance_uid, "1.2.3.999")
        assert not resolve(study.study_instance_uid, "1.2.3.404", second.instances[0].sop_instance_uid)
        with pytest.raises(InvalidRequest):
            resolve(study.study_instance_uid, "../../etc", "1.2.3")
    listings = [c for c in app.state.calls if not c]
    assert len(listings) == 2, "one listing per series, then cached"


def test_validation_with_http_resolver_finds_a_missing_instance(
    study: StudyRecord, serve: Callable[..., str]
) -> None:
    holdings = {
        (study.study_instance_uid, s.series_instance_uid): [i.sop_instance_uid for i in s.instances]
        for s in study.series
    }
    base = serve(_qido_app(holdings, page=100)) + "/rs"
    with httpx.Client(timeout=5) as client:
        report = validate_manifest(
            build_manifest(study, encoding="MCWG"), resolve=http_resolver(base, client)
        )
    assert _failed(report) == ["resolve"], "the KIN is not in this PACS"
    assert str(study.kin_sop_instance_uid) in report.check("resolve").detail


def test_http_resolver_raises_on_server_error(study: StudyRecord, serve: Callable[..., str]) -> None:
    async def boom(request: Request) -> Response:
        return Response(status_code=503)

    base = serve(Starlette(routes=[Route("/rs/studies/{s}/series/{se}/instances", boom)])) + "/rs"
    with httpx.Client(timeout=5) as client:
        report = validate_manifest(
            build_manifest(study, encoding="MADO"), resolve=http_resolver(base, client)
        )
    assert "503" in report.check("resolve").detail and report.check("resolve").status == "fail"


# --------------------------------------------------------------------------- dciodvfy wrapper


def test_value_type_errors_are_recognised() -> None:
    for vt in ("NUM", "DATE", "TIME"):
        line = f"Error - Unrecognized enumerated value <{vt}> for value 1 of attribute <Value Type>"
        assert is_mado_value_type_error(line)
    assert not is_mado_value_type_error(
        "Error - Unrecognized enumerated value <CODE> for value 1 of attribute <X>"
    )
    assert not is_mado_value_type_error(
        "Error - Missing attribute Type 1 Required Element=<ContinuityOfContent> Module=<ContainerMacro>"
    )


def test_output_is_split_into_errors_and_warnings() -> None:
    result = parse_output(
        "KeyObjectSelectionDocument\n"
        "Warning - Attribute is not present in standard DICOM IOD - (0x0008,0x1190) UR Retrieve URL\n"
        "Error - Unrecognized enumerated value <NUM> for value 1 of attribute <Value Type>\n"
        "Error - Missing attribute Type 1 Required Element=<X> Module=<Y>\n"
    )
    assert len(result.warnings) == 1 and len(result.errors) == 2
    assert result.errors_beyond_cp2595 == ["Error - Missing attribute Type 1 Required Element=<X> Module=<Y>"]


@pytest.mark.skipif(not dciodvfy_available(), reason="dicom3tools (dciodvfy) not installed")
def test_dciodvfy_reports_garbage_as_errors() -> None:
    assert run_dciodvfy(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\x04\x00abcd").errors


def test_missing_dciodvfy_is_a_clear_runtime_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    with pytest.raises(RuntimeError, match="dicom3tools"):
        run_dciodvfy(b"")


def test_rejection_note_is_not_a_manifest(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    ds.ConceptNameCodeSequence[0].CodeValue = "113001"
    ds.ConceptNameCodeSequence[0].CodeMeaning = "Rejected for Quality Reasons"
    report = validate_manifest(ds)
    assert "KOS" in _failed(report) and "rejection" in report.check("KOS").detail
