"""KOS manifests: what the builders write, what dciodvfy says of it, and what read_manifest recovers."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from pydicom import config
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from ncp.codes import KOS_SOP_CLASS
from ncp.dicom.dciodvfy import dciodvfy_available, is_mado_value_type_error, run_dciodvfy
from ncp.dicom.kos import (
    TITLE_MADO,
    TITLE_MANIFEST,
    TITLE_OF_INTEREST,
    build_kin,
    build_manifest,
    read_dataset,
    read_manifest,
    to_part10,
)
from ncp.errors import InvalidRequest
from ncp.model import StudyRecord

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
IHE = Path(__file__).resolve().parents[1] / "data" / "ihe"  # IHE's own MADO samples (CC BY 4.0)
SAMPLE = IHE / "MADO_KOS_A.dcm"
SAMPLE_B = IHE / "MADO_KOS_B.dcm"
needs_dciodvfy = pytest.mark.skipif(not dciodvfy_available(), reason="dicom3tools (dciodvfy) not installed")


# --------------------------------------------------------------------------- dciodvfy


@needs_dciodvfy
def test_mcwg_manifest_has_no_dciodvfy_error(study: StudyRecord) -> None:
    result = run_dciodvfy(to_part10(build_manifest(study, encoding="MCWG")))
    assert result.errors == []


@needs_dciodvfy
def test_mado_manifest_has_only_the_cp2595_value_type_errors(study: StudyRecord) -> None:
    result = run_dciodvfy(to_part10(build_manifest(study, encoding="MADO")))
    assert result.errors, "MADO's NUM/DATE/TIME items are expected to be reported until CP-2595"
    assert all(is_mado_value_type_error(e) for e in result.errors), result.errors


@needs_dciodvfy
def test_kin_has_no_dciodvfy_error(study: StudyRecord) -> None:
    assert run_dciodvfy(to_part10(build_kin(study))).errors == []


# --------------------------------------------------------------------------- Part 10


def test_part10_is_explicit_vr_little_endian_with_file_meta(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    data = to_part10(ds)
    assert data[128:132] == b"DICM"
    parsed = read_dataset(data)
    assert parsed.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert parsed.file_meta.MediaStorageSOPInstanceUID == study.manifest_sop_instance_uid
    assert "TransferSyntaxUID" not in getattr(ds, "file_meta", {}), "to_part10 must not change its input"


def test_builders_are_deterministic(study: StudyRecord) -> None:
    for encoding in ("MADO", "MCWG"):
        assert to_part10(build_manifest(study, encoding=encoding)) == to_part10(
            build_manifest(study, encoding=encoding)
        )


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("encoding", ["MADO", "MCWG"])
def test_round_trip_recovers_the_study(study: StudyRecord, encoding: str) -> None:
    manifest = read_manifest(to_part10(build_manifest(study, encoding=encoding)))  # type: ignore[arg-type]

    assert manifest.encoding == encoding
    assert manifest.title == (TITLE_MADO if encoding == "MADO" else TITLE_MANIFEST)
    assert manifest.sop_instance_uid == study.manifest_sop_instance_uid
    assert manifest.study_instance_uid == study.study_instance_uid
    assert (manifest.patient_id, manifest.issuer_of_patient_id) == (study.patient.id, study.patient.issuer)
    assert manifest.patient_id_issuer_oid == study.patient.issuer
    assert manifest.accession_numbers == ("ACC-1",)
    assert manifest.placer_order_numbers == ("PO-1", "PO-2")
    assert manifest.modalities == ("CT",)
    by_uid = {s.series_instance_uid: s for s in manifest.series}
    for series in study.series:
        got = by_uid[series.series_instance_uid]
        assert got.retrieve_location_uid == series.retrieve_location_uid
        assert got.retrieve_url == series.retrieve_url
        assert got.modality == series.modality
        assert got.description == series.description
        assert [(i.sop_class_uid, i.sop_instance_uid, i.instance_number) for i in got.instances] == [
            (i.sop_class_uid, i.sop_instance_uid, i.instance_number) for i in series.instances
        ]
    assert manifest.kin_sop_instance_uids == (study.kin_sop_instance_uid,)
    kin_series = by_uid[study.kin_series_instance_uid or ""]
    assert kin_series.retrieve_url == study.series[0].retrieve_url
    assert [i.sop_class_uid for i in kin_series.instances] == [KOS_SOP_CLASS]
    assert manifest.instance_count() == 7


def test_mcwg_flags_the_key_image_with_of_interest(study: StudyRecord) -> None:
    manifest = read_manifest(build_manifest(study, encoding="MCWG"))
    assert manifest.key_image_uids() == tuple(i.sop_instance_uid for i in study.key_images)
    flagged = [i for s in manifest.series for i in s.instances if i.flagged_as]
    assert [i.flagged_as for i in flagged] == [TITLE_OF_INTEREST.code]


def test_mcwg_carries_number_of_frames_for_multiframe_instances(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    refs = [
        r
        for s in ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
        for r in s.ReferencedSOPSequence
    ]
    frames = {
        r.ReferencedSOPClassUID: r.get("NumberOfFrames")
        for r in refs
        if r.ReferencedSOPClassUID != KOS_SOP_CLASS
    }
    assert frames == {CT_IMAGE: None, ENHANCED_CT: 12}


def test_accession_in_general_study_follows_each_encoding(study: StudyRecord) -> None:
    """MADO 6.X.2.6.1: the single accession with its issuer; Xt-EHR: always empty in General Study."""
    mado = build_manifest(study, encoding="MADO")
    assert mado.AccessionNumber == "ACC-1"
    assert mado.IssuerOfAccessionNumberSequence[0].UniversalEntityID == "1.2.3.4.5.2"
    assert build_manifest(study, encoding="MCWG").AccessionNumber == ""


def test_several_accessions_leave_general_study_empty(study: StudyRecord) -> None:
    second = dataclasses.replace(study.requests[1], accession_number="ACC-2")
    ds = build_manifest(dataclasses.replace(study, requests=(study.requests[0], second)), encoding="MADO")
    assert ds.AccessionNumber == ""
    assert "IssuerOfAccessionNumberSequence" not in ds
    assert [r.AccessionNumber for r in ds.ReferencedRequestSequence] == ["ACC-1", "ACC-2"]
    assert read_manifest(ds).accession_numbers == ("ACC-1", "ACC-2")


def test_request_items_carry_issuers_and_procedure_codes(study: StudyRecord) -> None:
    items = build_manifest(study, encoding="MCWG").ReferencedRequestSequence
    assert [i.PlacerOrderNumberImagingServiceRequest for i in items] == ["PO-1", "PO-2"]
    assert {i.OrderPlacerIdentifierSequence[0].UniversalEntityIDType for i in items} == {"ISO"}
    assert [i.RequestedProcedureCodeSequence[0].CodeValue for i in items] == ["CTCHEST", "CTABD"]
    codes = read_manifest(build_manifest(study, encoding="MCWG")).extras["procedure_codes"]
    assert codes == [r.procedure for r in study.requests], "private coding schemes survive the round trip"


def test_manifest_without_kin_references_only_the_images(study: StudyRecord) -> None:
    plain = dataclasses.replace(study, kin_sop_instance_uid=None, kin_series_instance_uid=None)
    for encoding in ("MADO", "MCWG"):
        manifest = read_manifest(build_manifest(plain, encoding=encoding))
        assert manifest.kin_sop_instance_uids == ()
        assert manifest.key_image_uids() == ()
        assert len(manifest.series) == 2


# --------------------------------------------------------------------------- KIN


def test_kin_references_the_key_images_with_a_description(study: StudyRecord) -> None:
    ds = build_kin(study)
    assert ds.ConceptNameCodeSequence[0].CodeValue == "113000"
    assert ds.ContentSequence[0].ValueType == "TEXT"
    assert ds.ContentSequence[0].ConceptNameCodeSequence[0].CodeValue == "113012"
    kin = read_manifest(to_part10(ds))
    assert kin.title == TITLE_OF_INTEREST
    assert [i.sop_instance_uid for s in kin.series for i in s.instances] == [
        i.sop_instance_uid for i in study.key_images
    ]
    assert kin.series[0].retrieve_url == study.series[0].retrieve_url


def test_kin_needs_key_images(study: StudyRecord) -> None:
    unflagged = tuple(
        dataclasses.replace(
            s, instances=tuple(dataclasses.replace(i, significant=False) for i in s.instances)
        )
        for s in study.series
    )
    with pytest.raises(ValueError, match="no key images"):
        build_kin(dataclasses.replace(study, series=unflagged))


# --------------------------------------------------------------------------- other manifests


def test_ihe_sample_parses() -> None:
    manifest = read_manifest(SAMPLE.read_bytes())
    assert manifest.encoding == "MADO"
    assert manifest.patient_id == "UV59569735"
    assert manifest.issuer_of_patient_id == "ACME_HOSPITAL"
    assert manifest.study_instance_uid == "1.2.250.1.59.40211.22756022.2.1.101"
    assert [len(s.instances) for s in manifest.series] == [50, 36]
    assert [s.retrieve_location_uid for s in manifest.series] == [
        "1.3.6.1.4.1.19376.1.1.200.1",
        "1.3.6.1.4.1.19376.1.1.200.2",
    ]
    assert {s.retrieve_url for s in manifest.series} == {"https://dicomserver.com/AET/rs/"}
    assert [s.description for s in manifest.series] == ["Series A1", "Series A2"]
    assert [i.instance_number for i in manifest.series[0].instances] == list(range(1, 51))
    assert manifest.modalities == ("CT",)


def test_ihe_sample_with_a_key_object_note_parses() -> None:
    """MADO_KOS_B: the key object note is a COMPOSITE library entry with a Document Title, no number."""
    manifest = read_manifest(SAMPLE_B.read_bytes())
    kin = "1.2.250.1.59.40211.22756022.2.3.102.202.31"
    assert manifest.study_instance_uid == "1.2.250.1.59.40211.22756022.2.1.102"
    assert [len(s.instances) for s in manifest.series] == [20, 1]
    assert manifest.kin_sop_instance_uids == (kin,)
    assert manifest.extras["kin_descriptions"] == {kin: "Significant DICOM Instances"}
    (note,) = manifest.series[1].instances
    assert (note.sop_class_uid, note.instance_number) == (KOS_SOP_CLASS, None)


# --------------------------------------------------------------------------- TID 1600 as IHE lays it out


def _groups(ds: Dataset) -> list[Dataset]:
    library = next(i for i in ds.ContentSequence if _code(i) == "111028")
    return [g for g in library.ContentSequence if _code(g) == "126200"]


def _code(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].CodeValue) if names else str(item.ValueType)


def _layout(group: Dataset) -> tuple[list[str], set[tuple[str, ...]]]:
    """A group as (its series descriptors in order, the distinct shapes of its entries): an entry's shape
    is its descriptors' concept codes followed by the value type of the reference they precede."""
    codes = [_code(i) for i in group.ContentSequence]
    first = next(n for n, c in enumerate(codes) if c in {"113609", "121140", "121144", "113012", "IMAGE"})
    entries: set[tuple[str, ...]] = set()
    pending: list[str] = []
    for c in codes[first:]:
        pending.append(c)
        if c in {"IMAGE", "COMPOSITE"}:
            entries.add(tuple(pending))
            pending = []
    return codes[:first], entries


def test_library_groups_are_laid_out_as_in_the_ihe_samples(study: StudyRecord) -> None:
    """Series descriptors in IHE's order, Target Region (123014) included; entry descriptors precede
    their reference; the key object note has Document Title and description, no Instance Number."""
    sample_images, sample_note = (_layout(g) for g in _groups(read_dataset(SAMPLE_B.read_bytes())))
    images, multiframe, note = (_layout(g) for g in _groups(build_manifest(study, encoding="MADO")))
    # Modality, Series Date, Time, Description, Number, Target Region, Series Instance UID, instance count
    series_descriptors = ["121139", "MADOTEMP003", "MADOTEMP004", "MADOTEMP002", "113607", "123014"]
    series_descriptors += ["112002", "MADOTEMP007"]
    assert images == sample_images == (series_descriptors, {("113609", "IMAGE")})
    assert multiframe[1] == {("113609", "121140", "IMAGE")}, "Number of Frames precedes the image too"
    assert note[0] == sample_note[0]
    assert note[1] == sample_note[1] == {("121144", "113012", "COMPOSITE")}


def test_each_group_names_its_series_target_region(study: StudyRecord) -> None:
    """MADO maps the group's Target Region to ImagingStudy.series.bodySite (MADO Table 4.3-1)."""
    for group in _groups(build_manifest(study, encoding="MADO")):
        (region,) = [i for i in group.ContentSequence if _code(i) == "123014"]
        coded = region.ConceptCodeSequence[0]
        assert (coded.CodeValue, coded.CodingSchemeDesignator) == ("67734004", "SCT")  # UPPERTRUNK


def test_descriptors_nested_below_the_entry_are_read_too(study: StudyRecord) -> None:
    """PS3.16 TID 1601 nests the entry descriptors under the reference: a reader must take both forms."""
    ds = build_manifest(study, encoding="MADO")
    for group in _groups(ds):
        items, pending, kept = list(group.ContentSequence), [], []
        for item in items:
            if _code(item) in {"113609", "121140", "121144", "113012"}:
                pending.append(item)
            elif item.ValueType in ("IMAGE", "COMPOSITE"):
                item.ContentSequence, pending = pending, []
                kept.append(item)
            else:
                kept.append(item)
        group.ContentSequence = kept
    manifest = read_manifest(ds)
    assert [i.instance_number for i in manifest.series[0].instances] == [1, 2, 3]
    assert manifest.kin_sop_instance_uids == (study.kin_sop_instance_uid,)


def _strip_extensions(ds: Dataset) -> Dataset:
    """An XDS-I.b manifest: the MCWG one without its attribute extensions."""
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0]
    del evidence.ModalitiesInStudy
    for series in evidence.ReferencedSeriesSequence:
        for keyword in ("Modality", "SeriesDescription", "SeriesDate", "SeriesTime", "SeriesNumber"):
            delattr(series, keyword)
        for ref in series.ReferencedSOPSequence:
            for keyword in ("InstanceNumber", "NumberOfFrames", "RelatedSeriesSequence", "ContentSequence"):
                if keyword in ref:
                    delattr(ref, keyword)
    return ds


def test_plain_xds_kos_is_read_as_kos(study: StudyRecord) -> None:
    manifest = read_manifest(to_part10(_strip_extensions(build_manifest(study, encoding="MCWG"))))
    assert manifest.encoding == "KOS"
    assert manifest.instance_count() == 7
    assert manifest.kin_sop_instance_uids == (study.kin_sop_instance_uid,), "a referenced KOS is a KIN"
    assert all(i.instance_number is None for s in manifest.series for i in s.instances)


# --------------------------------------------------------------------------- rejection


def _ct_image() -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CT_IMAGE
    ds.SOPInstanceUID = "1.2.3.4.5.6.7"
    ds.StudyInstanceUID = "1.2.3.4.5.6"
    ds.Modality = "CT"
    return ds


def test_ct_image_is_not_a_manifest() -> None:
    with pytest.raises(
        InvalidRequest, match=r"not a KOS manifest: SOP Class UID 1\.2\.840\.10008\.5\.1\.4\.1\.1\.2 "
    ):
        read_manifest(to_part10(_ct_image()))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty"),
        (b"\x00" * 128 + b"DICM" + b"\xff" * 64, "not a readable DICOM"),
        (b"hello world", "DICOM"),
    ],
)
def test_garbage_is_rejected_with_a_reason(data: bytes, reason: str) -> None:
    with pytest.raises(InvalidRequest, match=reason):
        read_manifest(data)


def test_truncated_manifest_is_rejected(study: StudyRecord) -> None:
    data = to_part10(build_manifest(study, encoding="MADO"))
    for cut in (len(data) // 2, len(data) - 1):
        with pytest.raises(InvalidRequest, match="truncated"):
            read_manifest(data[:cut])


def test_malformed_uid_in_a_manifest_is_rejected(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    series = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
    # written as a careless producer would: a leading zero is not allowed in a UID component (PS3.5 9.1)
    series[0x0020000E] = DataElement(0x0020000E, "UI", "1.2.03.4", validation_mode=config.IGNORE)
    with pytest.raises(InvalidRequest, match="SeriesInstanceUID"):
        read_manifest(ds)


def test_kos_without_evidence_is_rejected(study: StudyRecord) -> None:
    ds = build_manifest(study, encoding="MCWG")
    del ds.CurrentRequestedProcedureEvidenceSequence
    with pytest.raises(InvalidRequest, match="Evidence Sequence"):
        read_manifest(ds)
