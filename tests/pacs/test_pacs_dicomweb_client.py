"""A third-party DICOMweb client (ImagingDataCommons dicomweb-client) against the PACS."""

from __future__ import annotations

import io

import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from pacs_harness import Pacs
from pacs_samples import Sample, sample_study


@pytest.fixture
def client(pacs: Pacs) -> DICOMwebClient:
    return DICOMwebClient(url=pacs.base)


@pytest.fixture
def samples() -> list[Sample]:
    return sample_study("dicomweb-client", series=2, per_series=2)


def datasets(samples: list[Sample]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(s.data)) for s in samples]


def test_store_search_and_retrieve_round_trip(client: DICOMwebClient, samples: list[Sample]) -> None:
    stored = client.store_instances(datasets(samples))

    assert [item.ReferencedSOPInstanceUID for item in stored.ReferencedSOPSequence] == [
        s.sop for s in samples
    ]

    studies = client.search_for_studies(search_filters={"PatientID": "PAT-1"})
    (study,) = [pydicom.Dataset.from_json(s) for s in studies]
    assert study.StudyInstanceUID == samples[0].study
    assert study.NumberOfStudyRelatedInstances == len(samples)

    series = client.search_for_series(study_instance_uid=samples[0].study)
    assert {pydicom.Dataset.from_json(s).SeriesInstanceUID for s in series} == {s.series for s in samples}

    instances = client.search_for_instances(
        study_instance_uid=samples[0].study, series_instance_uid=samples[0].series, limit=1, offset=1
    )
    assert [pydicom.Dataset.from_json(i).SOPInstanceUID for i in instances] == [samples[1].sop]


def test_retrieve_study_series_instance_and_metadata(client: DICOMwebClient, samples: list[Sample]) -> None:
    client.store_instances(datasets(samples))
    first = samples[0]

    whole = client.retrieve_study(first.study)
    series = client.retrieve_series(first.study, first.series)
    instance = client.retrieve_instance(first.study, first.series, first.sop)
    metadata = client.retrieve_study_metadata(first.study)

    assert sorted(ds.SOPInstanceUID for ds in whole) == sorted(s.sop for s in samples)
    assert {ds.SOPInstanceUID for ds in series} == {s.sop for s in samples if s.series == first.series}
    original = pydicom.dcmread(io.BytesIO(first.data))
    assert instance.SOPInstanceUID == first.sop and instance.PixelData == original.PixelData
    assert {m["00080018"]["Value"][0] for m in metadata} == {s.sop for s in samples}


def test_streamed_retrieval_and_explicit_transfer_syntax(
    client: DICOMwebClient, samples: list[Sample]
) -> None:
    client.store_instances(datasets(samples))
    first = samples[0]

    streamed = list(client.iter_study(first.study))
    explicit = client.retrieve_instance(
        first.study, first.series, first.sop, media_types=(("application/dicom", "1.2.840.10008.1.2.1"),)
    )
    any_syntax = client.retrieve_instance(
        first.study, first.series, first.sop, media_types=(("application/dicom", "*"),)
    )

    assert len(streamed) == len(samples)
    assert explicit.SOPInstanceUID == any_syntax.SOPInstanceUID == first.sop


def test_rendered_instance(client: DICOMwebClient, samples: list[Sample]) -> None:
    client.store_instances(datasets(samples))
    first = samples[0]

    jpeg = client.retrieve_instance_rendered(first.study, first.series, first.sop)
    png = client.retrieve_instance_rendered(first.study, first.series, first.sop, media_types=("image/png",))

    assert jpeg[:2] == b"\xff\xd8"
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
