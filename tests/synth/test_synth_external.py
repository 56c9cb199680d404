"""Instances for an external manifest: the IHE MADO sample's study, series and SOP UIDs, exactly."""

from __future__ import annotations

from collections import Counter
from itertools import islice
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from synth_helpers import needs_dciodvfy, verify

from ncp.codes import DCM, KOS_SOP_CLASS, Code
from ncp.dicom.kos import read_manifest
from ncp.model import Manifest, ManifestInstance, ManifestSeries
from ncp.synth import instances_for_manifest, to_part10
from ncp.synth.images import CT_IMAGE, MR_IMAGE

IHE = Path(__file__).resolve().parents[1] / "data" / "ihe"  # IHE's own MADO samples (CC BY 4.0)
SAMPLE_STUDY = "1.2.250.1.59.40211.22756022.2.1.101"


@pytest.fixture(scope="module")
def sample() -> Manifest:
    return read_manifest((IHE / "MADO_KOS_A.dcm").read_bytes())


def hand_built(*series: ManifestSeries) -> Manifest:
    return Manifest(
        sop_instance_uid="2.25.1",
        encoding="KOS",
        title=Code("113030", DCM, "Manifest"),
        study_instance_uid="2.25.2",
        patient_id="P-42",
        issuer_of_patient_id="CLINIC",
        patient_id_issuer_oid="1.2.3.4",
        accession_numbers=("ACC9",),
        placer_order_numbers=("ORD9",),
        modalities=("MR",),
        series=series,
    )


def test_the_ihe_sample_gets_one_instance_per_reference_with_its_uids(sample: Manifest) -> None:
    made = list(instances_for_manifest(sample))
    assert len(made) == 86 == sample.instance_count()
    expected = [
        (s.series_instance_uid, i.sop_class_uid, i.sop_instance_uid)
        for s in sample.series
        for i in s.instances
    ]
    assert [(ds.SeriesInstanceUID, ds.SOPClassUID, ds.SOPInstanceUID) for ds in made] == expected
    assert {ds.StudyInstanceUID for ds in made} == {SAMPLE_STUDY}
    assert {ds.PatientID for ds in made} == {"UV59569735"}
    assert {ds.IssuerOfPatientID for ds in made} == {"ACME_HOSPITAL"}
    assert {ds.IssuerOfPatientIDQualifiersSequence[0].UniversalEntityID for ds in made} == {
        sample.patient_id_issuer_oid
    }
    assert {ds.AccessionNumber for ds in made} == set(sample.accession_numbers)
    assert {str(ds.PatientName) for ds in made} == {"DOE^John"}
    per_series = Counter(ds.SeriesInstanceUID for ds in made)
    assert [per_series[s.series_instance_uid] for s in sample.series] == [50, 36]


def test_the_second_ihe_sample_gets_its_images_but_not_its_key_object_note() -> None:
    """MADO_KOS_B references a KOS (a key object note) beside 20 CT images: only images are synthesised."""
    sample = read_manifest((IHE / "MADO_KOS_B.dcm").read_bytes())
    made = list(instances_for_manifest(sample))
    assert [ds.SOPInstanceUID for ds in made] == [i.sop_instance_uid for i in sample.series[0].instances]
    assert {ds.SOPClassUID for ds in made} == {CT_IMAGE}


def test_the_sample_keeps_its_dates_and_instance_numbers(sample: Manifest) -> None:
    made = list(instances_for_manifest(sample))
    assert {ds.StudyDate for ds in made} == {"20260224"}
    numbers = {i.sop_instance_uid: i.instance_number for s in sample.series for i in s.instances}
    assert all(ds.InstanceNumber == numbers[ds.SOPInstanceUID] for ds in made)


@needs_dciodvfy
def test_the_sample_instances_pass_dciodvfy(sample: Manifest) -> None:
    firsts: dict[str, Dataset] = {}
    for ds in instances_for_manifest(sample):
        firsts.setdefault(ds.SeriesInstanceUID, ds)
    for ds in firsts.values():
        result = verify(ds)
        assert result.errors == [], result.errors
        assert len(result.warnings) <= 2, result.warnings


def test_instance_kb_and_patient_name_are_honoured(sample: Manifest) -> None:
    ds = next(instances_for_manifest(sample, instance_kb=64, patient_name="ROE^Jane"))
    assert 0.9 * 64 * 1024 <= len(ds.PixelData) <= 64 * 1024
    assert str(ds.PatientName) == "ROE^Jane"


def test_external_bytes_are_deterministic(sample: Manifest) -> None:
    first = [to_part10(ds) for ds in islice(instances_for_manifest(sample), 12)]
    assert first == [to_part10(ds) for ds in islice(instances_for_manifest(sample), 12)]


def test_a_hand_built_manifest_without_extras_works() -> None:
    refs = tuple(ManifestInstance(MR_IMAGE, f"2.25.10{n}", None) for n in range(3))
    series = ManifestSeries("2.25.3", "2.25.4", "http://pacs.example/dicom-web/", refs, "MR", "T2")
    manifest = hand_built(series)
    made = list(instances_for_manifest(manifest))
    assert [ds.SOPInstanceUID for ds in made] == ["2.25.100", "2.25.101", "2.25.102"]
    assert [ds.InstanceNumber for ds in made] == [1, 2, 3]
    assert {ds.Modality for ds in made} == {"MR"} and made[0].SeriesDescription == "T2"
    assert made[0].RequestAttributesSequence[0].AccessionNumber == "ACC9"


def test_kos_references_are_skipped_and_unknown_classes_refused() -> None:
    image = ManifestInstance(CT_IMAGE, "2.25.200")
    kin = ManifestInstance(KOS_SOP_CLASS, "2.25.201")
    made = list(
        instances_for_manifest(
            hand_built(
                ManifestSeries("2.25.5", None, None, (image,)), ManifestSeries("2.25.6", None, None, (kin,))
            )
        )
    )
    assert [ds.SOPInstanceUID for ds in made] == ["2.25.200"]
    enhanced = ManifestInstance("1.2.840.10008.5.1.4.1.1.2.1", "2.25.202")  # Enhanced CT: not synthesised
    with pytest.raises(ValueError, match=r"1\.2\.840\.10008\.5\.1\.4\.1\.1\.2\.1"):
        instances_for_manifest(hand_built(ManifestSeries("2.25.7", None, None, (image, enhanced))))
