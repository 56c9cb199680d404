"""CT-like test instances (64x64, 16-bit) made with pydicom; nothing from ncp.synth."""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ncp.dicom.uids import deterministic_uid

__all__ = ["Sample", "ct_dataset", "part10", "sample_study"]


def ct_dataset(
    study: str,
    series: str,
    sop: str,
    *,
    patient_id: str = "PAT-1",
    patient_name: str = "Doe^Jane",
    accession: str = "ACC-1",
    study_date: str = "20250102",
    modality: str = "CT",
    series_number: int = 1,
    instance_number: int = 1,
    size: int = 64,
    seed: int = 0,
) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = series
    ds.PatientID = patient_id
    ds.PatientName = patient_name
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "F"
    ds.AccessionNumber = accession
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.StudyDescription = "CT chest"
    ds.ReferringPhysicianName = "Who^Doctor"
    ds.Modality = modality
    ds.SeriesNumber = series_number
    ds.SeriesDescription = f"{modality} series {series_number}"
    ds.BodyPartExamined = "CHEST"
    ds.InstanceNumber = instance_number
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.Rows = size
    ds.Columns = size
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.WindowCenter = 40
    ds.WindowWidth = 400
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 2000, size * size, dtype=np.float64).reshape(size, size)
    ds.PixelData = (ramp + rng.integers(0, 50, (size, size))).astype(np.int16).tobytes()
    return ds


def part10(ds: Dataset, *, implicit: bool = False) -> bytes:
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


@dataclass(frozen=True)
class Sample:
    """One instance: its UIDs and its PS3.10 bytes."""

    study: str
    series: str
    sop: str
    data: bytes


def sample_study(
    tag: str,
    *,
    series: int = 2,
    per_series: int = 3,
    modalities: tuple[str, ...] = ("CT", "CT"),
    **kw: object,
) -> list[Sample]:
    """A study of ``series`` x ``per_series`` instances with deterministic UIDs derived from ``tag``."""
    study = deterministic_uid("study", tag)
    out = []
    for s in range(series):
        series_uid = deterministic_uid("series", tag, s)
        for i in range(per_series):
            sop = deterministic_uid("sop", tag, s, i)
            ds = ct_dataset(
                study,
                series_uid,
                sop,
                modality=modalities[s % len(modalities)],
                series_number=s + 1,
                instance_number=i + 1,
                seed=s * 100 + i,
                **kw,  # type: ignore[arg-type]
            )
            out.append(Sample(study, series_uid, sop, part10(ds)))
    return out
