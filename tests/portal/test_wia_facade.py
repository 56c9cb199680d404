"""The WIA facade (MCWG 1.8): an unmodified DICOMweb client (dicomweb-client) lists and opens the
treatment-context patient's studies at one base URL, ``{B gateway}/wia/dicom-web``; QIDO-RS is answered
from the patient's KOS manifests, WADO-RS is mapped onto RAD-160."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient
from portal_harness import Portal

from ncp.consumer.client import ImagingConsumer
from ncp.model import PatientRecord, StudyRecord


def treatment_token(portal: Portal, patient: PatientRecord) -> str:
    consumer = ImagingConsumer(portal.gateway)
    try:
        consumer.authenticate()
        consumer.open_treatment_context(patient.issuer, patient.id)
        return consumer.headers["Authorization"].removeprefix("Bearer ")
    finally:
        consumer.close()


def spread_study(portal: Portal) -> StudyRecord:
    """A study whose series lie in both of FR's PACS: one study, two Retrieve Location UIDs."""
    return next(s for s in portal.fr().data.studies if len({x.retrieve_location_uid for x in s.series}) > 1)


@pytest.fixture
def study(portal: Portal) -> StudyRecord:
    return spread_study(portal)


@pytest.fixture
def client(portal: Portal, study: StudyRecord) -> Iterator[DICOMwebClient]:
    token = treatment_token(portal, study.patient)
    yield DICOMwebClient(f"{portal.gateway}/wia/dicom-web", headers={"Authorization": f"Bearer {token}"})


def images(study: StudyRecord) -> dict[str, set[str]]:
    return {s.series_instance_uid: {i.sop_instance_uid for i in s.instances} for s in study.series}


def test_qido_lists_every_study_of_the_patient_from_the_manifests(
    portal: Portal, study: StudyRecord, client: DICOMwebClient
) -> None:
    found = client.search_for_studies()
    expected = {s.study_instance_uid for s in portal.fr().data.studies if s.patient == study.patient}
    assert {r["0020000D"]["Value"][0] for r in found} == expected
    row = next(r for r in found if r["0020000D"]["Value"][0] == study.study_instance_uid)
    assert row["00100020"]["Value"] == [study.patient.id]
    assert row["00080061"]["Value"] == list(study.modalities)
    assert client.search_for_studies(search_filters={"StudyInstanceUID": study.study_instance_uid})[0] == row


def test_qido_lists_series_and_instances(study: StudyRecord, client: DICOMwebClient) -> None:
    series = client.search_for_series(study.study_instance_uid)
    got = {r["0020000E"]["Value"][0] for r in series}
    assert set(images(study)) <= got  # plus the key-image note's series, when the study has one
    first = study.series[0]
    instances = client.search_for_instances(study.study_instance_uid, first.series_instance_uid)
    assert {r["00080018"]["Value"][0] for r in instances} == images(study)[first.series_instance_uid]


def test_wado_rs_retrieves_a_series_and_a_study_spread_over_two_pacs(
    study: StudyRecord, client: DICOMwebClient
) -> None:
    first = study.series[0]
    series = client.retrieve_series(study.study_instance_uid, first.series_instance_uid)
    assert {str(ds.SOPInstanceUID) for ds in series} == images(study)[first.series_instance_uid]
    whole = client.retrieve_study(study.study_instance_uid)
    wanted = set().union(*images(study).values())
    assert wanted <= {str(ds.SOPInstanceUID) for ds in whole}
    metadata = client.retrieve_study_metadata(study.study_instance_uid)
    assert wanted <= {m["00080018"]["Value"][0] for m in metadata}


def test_the_facade_needs_the_patients_treatment_token(portal: Portal, study: StudyRecord) -> None:
    base = f"{portal.gateway}/wia/dicom-web"
    anonymous = httpx.get(f"{base}/studies")
    assert anonymous.status_code == 401 and "treatment token" in anonymous.headers["warning"]
    other = next(p for p in portal.fr().data.patients if p != study.patient)
    token = treatment_token(portal, other)
    foreign = httpx.get(
        f"{base}/studies/{study.study_instance_uid}", headers={"Authorization": f"Bearer {token}"}
    )
    assert foreign.status_code == 404 and "Warning" in foreign.headers


def test_series_metadata_and_a_rendered_instance_come_through_rad160(
    portal: Portal, study: StudyRecord
) -> None:
    token = treatment_token(portal, study.patient)
    series = study.series[0]
    wia = f"{portal.gateway}/wia/dicom-web"
    base = f"{wia}/studies/{study.study_instance_uid}/series/{series.series_instance_uid}"
    auth = {"Authorization": f"Bearer {token}"}
    metadata = httpx.get(f"{base}/metadata", headers={**auth, "Accept": "application/dicom+json"})
    assert metadata.status_code == 200
    assert {m["00080018"]["Value"][0] for m in metadata.json()} == images(study)[series.series_instance_uid]
    sop = series.instances[0].sop_instance_uid
    rendered = httpx.get(f"{base}/instances/{sop}/rendered", headers={**auth, "Accept": "image/png"})
    assert rendered.status_code == 200 and rendered.content.startswith(b"\x89PNG")
