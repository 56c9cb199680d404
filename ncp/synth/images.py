"""Instance datasets with real pixel data, built lazily one at a time (bounded memory).

Each modality fills the modules its IOD requires (PS3.3 A.3 CT, A.4 MR, A.2 CR, A.6 US, A.26 DX/MG),
so that dciodvfy reports no errors. Pixel data is a cheap deterministic pattern of the requested size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from ncp.dicom.uids import deterministic_uid
from ncp.model import InstanceRecord, SeriesRecord, StudyRecord

__all__ = ["instance_dataset", "study_instances"]

_UNPAIRED = frozenset({"HEADNECK", "HEART", "CARDIOVASCSYS", "WHOLEBODY", "SPINE"})
IMPLEMENTATION_UID = "2.25.305828205135452786926296549934716218154"


def study_instances(study: StudyRecord, instance_kb: int) -> Iterator[Dataset]:
    for series in study.series:
        for record in series.instances:
            yield instance_dataset(study, series, record, instance_kb)


def instance_dataset(
    study: StudyRecord, series: SeriesRecord, record: InstanceRecord, instance_kb: int
) -> Dataset:
    ds = Dataset()
    ds.file_meta = _meta(record)
    _patient_and_study(ds, study)
    _series(ds, study, series)
    _image(ds, series, record)
    _pixels(ds, series.modality, record.instance_number, instance_kb)
    {"CT": _ct, "MR": _mr, "CR": _cr, "US": _us, "MG": _mg}[series.modality](ds, series, record)
    return ds


def _meta(record: InstanceRecord) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(record.sop_class_uid)
    meta.MediaStorageSOPInstanceUID = UID(record.sop_instance_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID(IMPLEMENTATION_UID)
    meta.ImplementationVersionName = "XCWADO_0_1"
    return meta


def _patient_and_study(ds: Dataset, study: StudyRecord) -> None:
    patient = study.patient
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = f"{patient.family}^{patient.given}"
    ds.PatientID = patient.id
    ds.IssuerOfPatientID = patient.issuer
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.ReferringPhysicianName = ""
    ds.StudyID = study.study_instance_uid[-8:]
    ds.AccessionNumber = study.accession_number
    ds.StudyDescription = study.description
    ds.InstitutionName = study.institution
    ds.Manufacturer = "xcwado-testbed"


def _series(ds: Dataset, study: StudyRecord, series: SeriesRecord) -> None:
    ds.Modality = series.modality
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDescription = series.description
    ds.SeriesDate = series.date
    ds.SeriesTime = series.time
    ds.BodyPartExamined = series.body_part
    ds.FrameOfReferenceUID = deterministic_uid("for", study.study_instance_uid)
    ds.PositionReferenceIndicator = ""
    if series.modality != "MG" and series.body_part not in _UNPAIRED:  # MG: Image Laterality instead
        ds.Laterality = {"L": "L", "R": "R"}.get(study.laterality or "", "")
    if series.modality in ("CT", "MR"):
        ds.PatientPosition = "HFS"


def _image(ds: Dataset, series: SeriesRecord, record: InstanceRecord) -> None:
    ds.SOPClassUID = record.sop_class_uid
    ds.SOPInstanceUID = record.sop_instance_uid
    ds.InstanceNumber = record.instance_number
    ds.ContentDate = series.date
    ds.ContentTime = series.time
    ds.AcquisitionNumber = 1
    ds.PatientOrientation = ""


def _pixels(ds: Dataset, modality: str, index: int, instance_kb: int) -> None:
    eight_bit = modality == "US"
    bytes_per_pixel = 1 if eight_bit else 2
    side = max(8, int(math.sqrt(instance_kb * 1024 / bytes_per_pixel)) // 2 * 2)
    y, x = np.mgrid[0:side, 0:side]
    pattern = ((x * 7 + y * 3 + index * 11) % 256) * (1 if eight_bit else 8)
    array = pattern.astype(np.uint8 if eight_bit else np.uint16)
    ds.Rows = ds.Columns = side
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 if eight_bit else 16
    ds.BitsStored = 8 if eight_bit else 12
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    ds.PixelData = array.tobytes()
    ds["PixelData"].VR = "OB" if eight_bit else "OW"


def _plane(ds: Dataset, record: InstanceRecord) -> None:
    ds.PixelSpacing = [0.7, 0.7]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.ImagePositionPatient = [-180.0, -180.0, float(record.instance_number * 5)]
    ds.SliceThickness = 5.0


def _ct(ds: Dataset, series: SeriesRecord, record: InstanceRecord) -> None:
    _plane(ds, record)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.WindowCenter = 40
    ds.WindowWidth = 400


def _mr(ds: Dataset, series: SeriesRecord, record: InstanceRecord) -> None:
    _plane(ds, record)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = "SE"
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = 500.0
    ds.EchoTime = 15.0
    ds.EchoTrainLength = 1
    ds.MagneticFieldStrength = 1.5


def _cr(ds: Dataset, series: SeriesRecord, record: InstanceRecord) -> None:
    ds.ViewPosition = "PA" if series.description == "PA" else "LL"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImagerPixelSpacing = [0.15, 0.15]


def _us(ds: Dataset, series: SeriesRecord, record: InstanceRecord) -> None:
    ds.ImageType = ["ORIGINAL", "PRIMARY", "ABDOMINAL", ""]


def _mg(ds: Dataset, series: SeriesRecord, record: InstanceRecord) -> None:
    side, view = series.description.split(" ")[0], series.description.split(" ")[-1]
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageLaterality = side
    ds.PatientOrientation = ["A", "R"] if side == "L" else ["P", "L"]
    ds.AcquisitionContextSequence = Sequence()
    ds.ViewPosition = view
    ds.BurnedInAnnotation = "NO"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = -1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.LossyImageCompression = "00"
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.DetectorType = "DIRECT"
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.BreastImplantPresent = "NO"
    ds.OrganExposed = "BREAST"
    ds.WindowCenter = 2048
    ds.WindowWidth = 4096
    ds.AnatomicRegionSequence = Sequence([_code("T-04000", "SRT", "Breast")])
    view_code = _code(
        "R-10242" if view == "CC" else "R-10226",
        "SRT",
        "cranio-caudal" if view == "CC" else "medio-lateral oblique",
    )
    view_code.ViewModifierCodeSequence = Sequence()
    ds.ViewCodeSequence = Sequence([view_code])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue = value
    item.CodingSchemeDesignator = scheme
    item.CodeMeaning = meaning
    return item
