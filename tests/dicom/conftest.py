"""A small study for the manifest tests: 2 series of 3 instances, one key image, two placer orders."""

from __future__ import annotations

import pytest

from ncp.codes import DCM, SCT, Code
from ncp.dicom.uids import deterministic_uid
from ncp.model import InstanceRecord, PatientRecord, RequestRecord, SeriesRecord, StudyRecord

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
ENHANCED_CT = "1.2.840.10008.5.1.4.1.1.2.1"
PACS_A = "http://pacs-a.example:8042/dicom-web"
PACS_B = "http://pacs-b.example:8042/dicom-web"


def _series(n: int, study_uid: str, modality: str, sop_class: str, rluid: str, url: str) -> SeriesRecord:
    uid = deterministic_uid("series", study_uid, n)
    instances = tuple(
        InstanceRecord(
            sop_class_uid=sop_class,
            sop_instance_uid=deterministic_uid("sop", uid, i),
            instance_number=i,
            significant=(n == 1 and i == 2),
            frames=12 if sop_class == ENHANCED_CT else None,
        )
        for i in (1, 2, 3)
    )
    return SeriesRecord(
        series_instance_uid=uid,
        modality=modality,
        series_number=n,
        description=f"{modality} series {n} – axial",
        date="20250102",
        time="101500",
        body_part="UPPERTRUNK",
        retrieve_location_uid=rluid,
        retrieve_url=url,
        instances=instances,
    )


def make_study() -> StudyRecord:
    study_uid = deterministic_uid("study", "test")
    patient = PatientRecord("BE", "BE-123456", "1.2.3.4.5.1", "Peeters", "Anna", "19700101", "F")
    procedure = Code("CTCHEST", "urn:oid:1.2.3.4.5.9", "CT chest with contrast")
    requests = (
        RequestRecord("ACC-1", "1.2.3.4.5.2", "PO-1", "1.2.3.4.5.3", procedure),
        RequestRecord(
            "ACC-1", "1.2.3.4.5.2", "PO-2", "1.2.3.4.5.3", Code("CTABD", "urn:oid:1.2.3.4.5.9", "CT abdomen")
        ),
    )
    return StudyRecord(
        study_instance_uid=study_uid,
        patient=patient,
        requests=requests,
        date="20250102",
        time="100000",
        description="CT thorax abdomen",
        modalities=("CT",),
        anatomical_region=Code("67734004", SCT, "Upper trunk"),
        procedure=Code("CTTA", DCM, "CT thorax abdomen"),
        laterality=None,
        institution="Hôpital Test^^^^^^^^^1.2.3.4.5",
        series=(
            _series(1, study_uid, "CT", CT_IMAGE, "1.2.3.4.5.100.1", PACS_A),
            _series(2, study_uid, "CT", ENHANCED_CT, "1.2.3.4.5.100.2", PACS_B),
        ),
        manifest_sop_instance_uid=deterministic_uid("manifest", study_uid),
        manifest_series_instance_uid=deterministic_uid("manifest-series", study_uid),
        kin_sop_instance_uid=deterministic_uid("kin", study_uid),
        kin_series_instance_uid=deterministic_uid("kin-series", study_uid),
    )


@pytest.fixture
def study() -> StudyRecord:
    return make_study()
