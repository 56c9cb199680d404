"""Synthetic image instances: valid for dciodvfy, faithful to the records, sized by instance_kb."""

from __future__ import annotations

import inspect
import io
from collections.abc import Iterator

import pydicom
import pytest
from pydicom.dataset import Dataset
from synth_helpers import needs_dciodvfy, synth, verify

from ncp.model import StudyRecord
from ncp.synth import CountryData, to_part10
from ncp.synth.images import (
    CR_IMAGE,
    CT_IMAGE,
    MG_FOR_PRESENTATION,
    MR_IMAGE,
    SOP_CLASS_BY_MODALITY,
    US_IMAGE,
)
from ncp.synth.procedures import COMBINED_CT, PROCEDURES
from ncp.topology import Topology

ALL_PROCEDURES = {p.code.display for group in PROCEDURES.values() for p in group} | {COMBINED_CT.code.display}


def first_of_each_series(data: CountryData, study: StudyRecord) -> Iterator[Dataset]:
    wanted = {s.series_instance_uid for s in study.series}
    for ds in data.instances(study):
        if ds.SeriesInstanceUID in wanted:
            wanted.discard(ds.SeriesInstanceUID)
            yield ds


@pytest.fixture(scope="module")
def one_study_per_procedure(default_topology: Topology) -> dict[str, tuple[CountryData, StudyRecord]]:
    """A study of every procedure of the catalogue, taken from as few seeds as needed."""
    found: dict[str, tuple[CountryData, StudyRecord]] = {}
    for seed in range(1, 40):
        data = synth(
            default_topology, "FR", seed=seed, patients_per_country=5, studies_per_patient=2, instance_kb=8
        )
        for study in data.studies:
            found.setdefault(study.procedure.display, (data, study))
        if set(found) == ALL_PROCEDURES:
            return found
    raise AssertionError(f"procedures never generated: {ALL_PROCEDURES - set(found)}")


@needs_dciodvfy
@pytest.mark.parametrize("procedure", sorted(ALL_PROCEDURES))
def test_every_series_of_every_procedure_passes_dciodvfy(
    procedure: str, one_study_per_procedure: dict[str, tuple[CountryData, StudyRecord]]
) -> None:
    data, study = one_study_per_procedure[procedure]
    checked = 0
    for ds in first_of_each_series(data, study):
        result = verify(ds)
        assert result.errors == [], (procedure, ds.SeriesDescription, result.errors)
        assert len(result.warnings) <= 2, result.warnings  # warnings are tolerated, but few
        checked += 1
    assert checked == len(study.series)


def test_the_five_storage_sop_classes_are_produced(
    one_study_per_procedure: dict[str, tuple[CountryData, StudyRecord]],
) -> None:
    studies = [study for _, study in one_study_per_procedure.values()]
    classes = {i.sop_class_uid for study in studies for s in study.series for i in s.instances}
    assert classes == {CT_IMAGE, MR_IMAGE, CR_IMAGE, US_IMAGE, MG_FOR_PRESENTATION}


def test_instances_are_generated_lazily_one_per_record(fr: CountryData) -> None:
    study = fr.studies[0]
    stream = fr.instances(study)
    assert inspect.isgenerator(stream)
    uids = [ds.SOPInstanceUID for ds in fr.instances(study)]
    assert uids == [i.sop_instance_uid for s in study.series for i in s.instances]


def test_instances_carry_the_records_attributes(fr: CountryData) -> None:
    for study in fr.studies:
        records = {i.sop_instance_uid: (s, i) for s in study.series for i in s.instances}
        for ds in fr.instances(study):
            series, record = records[ds.SOPInstanceUID]
            assert ds.SOPClassUID == record.sop_class_uid == SOP_CLASS_BY_MODALITY[series.modality]
            assert ds.file_meta.MediaStorageSOPInstanceUID == record.sop_instance_uid
            assert ds.InstanceNumber == record.instance_number
            assert ds.StudyInstanceUID == study.study_instance_uid
            assert ds.SeriesInstanceUID == series.series_instance_uid
            assert (ds.Modality, ds.SeriesNumber, ds.SeriesDescription) == (
                series.modality,
                series.series_number,
                series.description,
            )
            assert ds.BodyPartExamined == series.body_part
            assert (ds.PatientID, ds.IssuerOfPatientID) == (study.patient.id, study.patient.issuer)
            assert ds.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID == study.patient.issuer
            assert str(ds.PatientName) == f"{study.patient.family}^{study.patient.given}"
            assert ds.AccessionNumber == study.accession_number
            assert [r.AccessionNumber for r in ds.RequestAttributesSequence] == [
                r.accession_number for r in study.requests
            ]
            assert ds.InstitutionName == study.institution
            assert (ds.StudyDate, ds.SeriesDate) == (study.date, series.date)
            assert ds.ContentDate == series.date  # derived from the records, never the wall clock


def test_the_two_orders_study_lists_both_requests_in_its_images(fr: CountryData) -> None:
    study = next(s for s in fr.studies if len(s.requests) == 2)
    ds = next(fr.instances(study))
    codes = [item.RequestedProcedureCodeSequence[0].CodeValue for item in ds.RequestAttributesSequence]
    assert codes == [r.procedure.code for r in study.requests]
    assert ds.ProcedureCodeSequence[0].CodeValue == study.procedure.code


def test_laterality_is_written_where_the_body_part_is_paired(
    one_study_per_procedure: dict[str, tuple[CountryData, StudyRecord]],
) -> None:
    for data, study in one_study_per_procedure.values():
        for ds in first_of_each_series(data, study):
            if ds.Modality == "MG":
                assert ds.ImageLaterality in ("L", "R") and "Laterality" not in ds
                assert study.laterality == "B" or ds.ImageLaterality == study.laterality
            elif study.laterality in ("L", "R"):
                assert ds.Laterality == study.laterality
            else:
                assert "Laterality" not in ds


def test_mammography_has_four_views_with_view_codes(
    one_study_per_procedure: dict[str, tuple[CountryData, StudyRecord]],
) -> None:
    for name in ("MG Breast Screening", "MG Breast - left Screening"):
        data, study = one_study_per_procedure[name]
        firsts = list(first_of_each_series(data, study))
        views = [(ds.ImageLaterality, ds.ViewCodeSequence[0].CodeMeaning) for ds in firsts]
        assert len(set(views)) == 4
        assert all(ds.PresentationIntentType == "FOR PRESENTATION" for ds in data.instances(study))


@pytest.mark.parametrize(
    ("modality", "photometric", "bits"),
    [
        ("CT", "MONOCHROME2", 16),
        ("MR", "MONOCHROME2", 16),
        ("CR", "MONOCHROME2", 16),
        ("US", "RGB", 8),
        ("MG", "MONOCHROME2", 16),
    ],
)
@pytest.mark.parametrize("kb", [8, 512])
def test_pixel_data_size_follows_instance_kb(
    default_topology: Topology, modality: str, photometric: str, bits: int, kb: int
) -> None:
    data = synth(default_topology, "FR", instance_kb=kb)
    study = next(s for s in data.studies if s.modalities == (modality,))
    ds = next(data.instances(study))
    assert (ds.PhotometricInterpretation, ds.BitsAllocated) == (photometric, bits)
    size = len(ds.PixelData)
    assert size == ds.Rows * ds.Columns * ds.SamplesPerPixel * bits // 8
    assert 0.9 * kb * 1024 <= size <= kb * 1024
    if modality == "CT" and kb == 512:
        assert (ds.Rows, ds.Columns) == (512, 512)  # a real CT slice: 512 x 512 x 16 bit


def test_pixels_vary_between_slices(fr: CountryData) -> None:
    study = next(s for s in fr.studies if s.modalities == ("CT",))
    series = [ds for ds in fr.instances(study) if ds.SeriesInstanceUID == study.series[0].series_instance_uid]
    assert len({ds.PixelData for ds in series}) == len(series)
    positions = [float(ds.ImagePositionPatient[2]) for ds in series]
    assert positions == sorted(positions) and len(set(positions)) == len(positions)


def test_part10_is_explicit_vr_little_endian_and_reads_back(fr: CountryData) -> None:
    ds = next(fr.instances(fr.studies[1]))
    data = to_part10(ds)
    assert data[128:132] == b"DICM"
    back = pydicom.dcmread(io.BytesIO(data))
    assert back.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert back.SOPInstanceUID == ds.SOPInstanceUID
    assert back.PixelData == ds.PixelData
    assert back.pixel_array.shape == (ds.Rows, ds.Columns)
    assert to_part10(ds) == data  # no hidden state, no clock


def test_utf8_names_survive_the_round_trip(default_topology: Topology) -> None:
    data = synth(default_topology, "AT", patients_per_country=8)
    assert any(not (p.family + p.given).isascii() for p in data.patients)  # e.g. Müller, Jördis
    for study in data.studies:
        ds = pydicom.dcmread(io.BytesIO(to_part10(next(data.instances(study)))))
        assert ds.SpecificCharacterSet == "ISO_IR 192"
        assert str(ds.PatientName) == f"{study.patient.family}^{study.patient.given}"
        assert ds.InstitutionName == study.institution
