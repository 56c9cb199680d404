"""Synthetic image instances (pydicom datasets) for the catalogue's records.

One builder per storage SOP class; each writes the modules its IOD requires (PS3.3 A.3 CT, A.4 MR,
A.2 CR, A.6 US, A.26 Digital Mammography For Presentation) so that dicom3tools' ``dciodvfy``
finds no error. Pixel data are a cheap deterministic numpy pattern whose size follows
``instance_kb``; nothing depends on the wall clock, so the same records give the same bytes.
"""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from datetime import datetime, timedelta

import numpy as np
from numpy.typing import NDArray
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID, ExplicitVRLittleEndian

from ncp.codes import DCM, LOINC, SCT, Code
from ncp.dicom.uids import deterministic_uid
from ncp.model import InstanceRecord, SeriesRecord, StudyRecord
from ncp.synth.procedures import SeriesSpec, default_series_spec

__all__ = [
    "CR_IMAGE",
    "CT_IMAGE",
    "IMPLEMENTATION_CLASS_UID",
    "MG_FOR_PRESENTATION",
    "MODALITY_BY_SOP_CLASS",
    "MR_IMAGE",
    "SOP_CLASS_BY_MODALITY",
    "US_IMAGE",
    "image_side",
    "instance_dataset",
    "to_part10",
]

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
MR_IMAGE = "1.2.840.10008.5.1.4.1.1.4"
CR_IMAGE = "1.2.840.10008.5.1.4.1.1.1"
US_IMAGE = "1.2.840.10008.5.1.4.1.1.6.1"
MG_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
SOP_CLASS_BY_MODALITY = {
    "CT": CT_IMAGE,
    "MR": MR_IMAGE,
    "CR": CR_IMAGE,
    "US": US_IMAGE,
    "MG": MG_FOR_PRESENTATION,
}
MODALITY_BY_SOP_CLASS = {v: k for k, v in SOP_CLASS_BY_MODALITY.items()}

# A fixed implementation identity (PS3.7 D.3.3.2): file bytes must not change with the pydicom version.
IMPLEMENTATION_CLASS_UID = UID(deterministic_uid("xcwado-testbed", "ncp.synth", "implementation"))
_IMPLEMENTATION_VERSION = "NCP_SYNTH_1"
_MANUFACTURER = "xcwado-testbed"
_MODEL = {"CT": "Synth CT 64", "MR": "Synth MR 1.5T", "CR": "Synth CR", "US": "Synth US", "MG": "Synth MG"}

# Direction cosines of Image Orientation (Patient) per acquisition plane (PS3.3 C.7.6.2.1.1)
_ORIENTATION = {
    "AXIAL": (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    "CORONAL": (1.0, 0.0, 0.0, 0.0, 0.0, -1.0),
    "SAGITTAL": (0.0, 1.0, 0.0, 0.0, 0.0, -1.0),
}
# MR sequences: Scanning Sequence, Sequence Variant, Scan Options, TR, TE, TI, echo train length
_MR_SEQUENCES: dict[str, tuple[list[str], list[str], list[str], float, float, float | None, int]] = {
    "T1": (["SE"], ["NONE"], [""], 550.0, 12.0, None, 1),
    "T2": (["SE"], ["SK"], [""], 4200.0, 95.0, None, 16),
    "FLAIR": (["SE", "IR"], ["SK"], [""], 9000.0, 110.0, 2500.0, 24),
    "PDFS": (["SE"], ["SK"], ["FS"], 3000.0, 30.0, None, 8),
}
# CID 4014 view codes and Patient Orientation per mammography view and laterality (PS3.3 C.8.11.7)
_MG_VIEWS = {
    "CC": Code("399162004", SCT, "cranio-caudal"),
    "MLO": Code("399368009", SCT, "medio-lateral oblique"),
    "ML": Code("399260004", SCT, "medio-lateral"),
    "LM": Code("399067008", SCT, "latero-medial"),
}
_MG_ORIENTATION = {
    ("CC", "R"): ["P", "L"],
    ("CC", "L"): ["A", "R"],
    ("MLO", "R"): ["P", "FL"],
    ("MLO", "L"): ["A", "FR"],
    ("ML", "R"): ["P", "F"],
    ("ML", "L"): ["A", "F"],
    ("LM", "R"): ["A", "F"],
    ("LM", "L"): ["P", "F"],
}
_BREAST = Code("76752008", SCT, "Breast")
_UNPAIRED = frozenset(
    ("WHOLEBODY", "HEADNECK", "HEAD", "BRAIN", "NECK", "CHEST", "ABDOMEN", "PELVIS", "HEART", "SPINE")
)
_CODE_SCHEMES = {SCT: "SCT", DCM: "DCM", LOINC: "LN"}


def image_side(instance_kb: int, bytes_per_pixel: int) -> int:
    """Rows = Columns so that the pixel data is about ``instance_kb`` KB (even, 16..4096)."""
    pixels = max(1, instance_kb) * 1024 // bytes_per_pixel
    side = math.isqrt(pixels)
    return max(16, min(4096, side - side % 2))


def instance_dataset(
    study: StudyRecord,
    series: SeriesRecord,
    instance: InstanceRecord,
    *,
    spec: SeriesSpec | None = None,
    instance_kb: int = 16,
    issuer_of_patient_id: str | None = None,
) -> Dataset:
    """The image ``instance`` of ``series`` in ``study``, with file meta (Explicit VR Little Endian).

    ``issuer_of_patient_id`` overrides the text of Issuer of Patient ID (0010,0021) when it is not
    the issuer OID (e.g. an external manifest's 'ACME_HOSPITAL')."""
    builder = _BUILDERS.get(instance.sop_class_uid)
    if builder is None:
        supported = ", ".join(sorted(_BUILDERS))
        raise ValueError(f"cannot synthesise SOP class {instance.sop_class_uid}; supported: {supported}")
    spec = spec or default_series_spec(MODALITY_BY_SOP_CLASS[instance.sop_class_uid], series.description)
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"  # names and institutions are UTF-8 (PS3.3 C.12.1.1.2)
    ds.SOPClassUID = instance.sop_class_uid
    ds.SOPInstanceUID = instance.sop_instance_uid
    _patient(ds, study, issuer_of_patient_id)
    _study(ds, study)
    _series(ds, study, series, instance)
    _equipment(ds, study, series)
    _image(ds, series, instance)
    builder(ds, _Context(study, series, instance, spec, instance_kb))
    ds.file_meta = _file_meta(ds)
    return ds


def to_part10(ds: Dataset) -> bytes:
    """``ds`` as a PS3.10 file in Explicit VR Little Endian; ``ds`` itself is not changed."""
    out = Dataset(ds)  # shallow copy: new file meta without touching the caller's
    out.file_meta = _file_meta(ds)
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True, little_endian=True, implicit_vr=False)
    return buf.getvalue()


# --------------------------------------------------------------------------- common modules


class _Context:
    def __init__(
        self, study: StudyRecord, series: SeriesRecord, instance: InstanceRecord, spec: SeriesSpec, kb: int
    ) -> None:
        self.study, self.series, self.instance, self.spec, self.kb = study, series, instance, spec, kb
        self.index = max(0, instance.instance_number - 1)
        self.count = max(len(series.instances), self.index + 1)
        # per-series variation of the pattern, stable across runs (not Python's salted hash)
        self.salt = int(series.series_instance_uid.rsplit(".", 1)[-1][-6:] or "0") % 997


def _file_meta(ds: Dataset) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = IMPLEMENTATION_CLASS_UID
    meta.ImplementationVersionName = _IMPLEMENTATION_VERSION
    return meta


def _code_item(code: Code) -> Dataset:
    item = Dataset()
    item.CodeValue = code.code
    item.CodingSchemeDesignator = _designator(code.system)
    item.CodeMeaning = code.display[:64]
    return item


def _designator(system: str) -> str:
    """PS3.16 designator of a FHIR system; a short designator is kept (e.g. 99IHE from a parsed KOS)."""
    if system in _CODE_SCHEMES:
        return _CODE_SCHEMES[system]
    return system if system and len(system) <= 16 and not set(":/") & set(system) else "99LOCAL"


def _issuer(oid: str) -> Dataset:
    """HL7 v2 HD as Universal Entity ID + type ISO (PS3.3 Table 10-17)."""
    item = Dataset()
    item.UniversalEntityID = oid
    item.UniversalEntityIDType = "ISO"
    return item


def _patient(ds: Dataset, study: StudyRecord, issuer_text: str | None) -> None:
    """Patient module with the national ID and its issuer, as the manifests carry it (MADO 6.X.2.5)."""
    p = study.patient
    ds.PatientName = f"{p.family}^{p.given}" if p.given else p.family
    ds.PatientID = p.id
    ds.IssuerOfPatientID = (issuer_text or p.issuer)[:64]
    if p.issuer:
        ds.IssuerOfPatientIDQualifiersSequence = Sequence([_issuer(p.issuer)])
    ds.PatientBirthDate = p.birth_date
    ds.PatientSex = p.sex


def _study(ds: Dataset, study: StudyRecord) -> None:
    ds.StudyInstanceUID = study.study_instance_uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.ReferringPhysicianName = ""
    ds.StudyID = study.study_instance_uid[-8:]
    # MADO 6.X.2.6.1: the accession when there is one, empty when several (listed per request)
    ds.AccessionNumber = study.accession_number
    if study.accession_number and study.requests and study.requests[0].accession_issuer:
        ds.IssuerOfAccessionNumberSequence = Sequence([_issuer(study.requests[0].accession_issuer)])
    ds.StudyDescription = study.description[:64]
    if study.procedure.code:
        ds.ProcedureCodeSequence = Sequence([_code_item(study.procedure)])


def _request_item(study: StudyRecord, index: int) -> Dataset:
    """Request Attributes Sequence (0040,0275) item: the m-n order/accession links (PS3.3 C.7.3.1)."""
    r = study.requests[index]
    item = Dataset()
    item.AccessionNumber = r.accession_number
    if r.accession_issuer:
        item.IssuerOfAccessionNumberSequence = Sequence([_issuer(r.accession_issuer)])
    item.StudyInstanceUID = study.study_instance_uid
    item.RequestedProcedureID = f"RP{index + 1}-{r.accession_number}"[:16]
    item.RequestedProcedureDescription = r.procedure.display[:64]
    if r.procedure.code:
        item.RequestedProcedureCodeSequence = Sequence([_code_item(r.procedure)])
    item.ScheduledProcedureStepID = f"SPS{index + 1}-{r.accession_number}"[:16]
    # The placer order is not an attribute of the Request Attributes Macro (PS3.3 Table 10-9): it
    # travels in the manifest's Referenced Request Sequence and the DocumentReference only.
    return item


def _series(ds: Dataset, study: StudyRecord, series: SeriesRecord, instance: InstanceRecord) -> None:
    ds.Modality = MODALITY_BY_SOP_CLASS[instance.sop_class_uid]
    ds.SeriesInstanceUID = series.series_instance_uid
    ds.SeriesNumber = series.series_number
    ds.SeriesDate = series.date
    ds.SeriesTime = series.time
    ds.SeriesDescription = series.description[:64]
    ds.BodyPartExamined = series.body_part[:16]
    # General Series Laterality is 2C for paired parts unless Image Laterality is sent (MG) (PS3.3 C.7.3.1)
    if ds.Modality != "MG":
        if study.laterality in ("L", "R"):
            ds.Laterality = study.laterality
        elif series.body_part not in _UNPAIRED:
            ds.Laterality = ""  # paired, side unknown
    ds.PerformedProcedureStepStartDate = study.date
    ds.PerformedProcedureStepStartTime = study.time
    ds.PerformedProcedureStepID = study.study_instance_uid[-8:]
    ds.PerformedProcedureStepDescription = study.procedure.display[:64]
    if study.requests:
        ds.RequestAttributesSequence = Sequence([_request_item(study, i) for i in range(len(study.requests))])


def _equipment(ds: Dataset, study: StudyRecord, series: SeriesRecord) -> None:
    ds.Manufacturer = _MANUFACTURER
    ds.InstitutionName = study.institution[:64]
    ds.ManufacturerModelName = _MODEL.get(str(ds.Modality), "Synth")
    ds.DeviceSerialNumber = series.retrieve_location_uid[-8:] or "0"
    ds.SoftwareVersions = "ncp.synth 1"
    ds.StationName = f"{ds.Modality}{series.retrieve_location_uid[-3:]}"[:16]


def _shift(date: str, time: str, seconds: int) -> tuple[str, str]:
    """(DA, TM) ``seconds`` after ``date`` ``time``, carrying into the next day if needed."""
    digits = "".join(ch for ch in time.split(".")[0] if ch.isdigit())
    digits = (digits + "000000")[:6]
    try:
        start = datetime.strptime(date + digits, "%Y%m%d%H%M%S")
    except ValueError:
        start = datetime(2026, 1, 1, 12, 0, 0)
    moment = start + timedelta(seconds=seconds)
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")


def _image(ds: Dataset, series: SeriesRecord, instance: InstanceRecord) -> None:
    """General Image: content and acquisition time fixed by the series (PS3.3 C.7.6.1)."""
    ds.InstanceNumber = instance.instance_number
    ds.ContentDate, ds.ContentTime = _shift(series.date, series.time, 2 * instance.instance_number)
    ds.AcquisitionDate, ds.AcquisitionTime = _shift(
        series.date, series.time, 2 * instance.instance_number - 1
    )
    ds.AcquisitionNumber = 1
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"


def _pixels(ds: Dataset, data: NDArray[np.uint8] | NDArray[np.uint16], *, bits_stored: int) -> None:
    """Image Pixel module (PS3.3 C.7.6.3) for a monochrome uint16 or RGB uint8 array."""
    rgb = data.ndim == 3
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.Rows, ds.Columns = int(data.shape[0]), int(data.shape[1])
    ds.BitsAllocated = data.dtype.itemsize * 8
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    vr = "OB" if data.dtype.itemsize == 1 else "OW"
    ds[0x7FE00010] = DataElement(0x7FE00010, vr, data.astype(data.dtype.newbyteorder("<")).tobytes())


# --------------------------------------------------------------------------- pixel patterns


def _grid(side: int) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    axis = np.linspace(-1.0, 1.0, side, dtype=np.float32)
    return axis[:, None], axis[None, :]


def _texture(side: int, salt: int) -> NDArray[np.uint32]:
    """Deterministic speckle in 0..255 from integer hashing (no random generator involved)."""
    y = np.arange(side, dtype=np.uint32)[:, None]
    x = np.arange(side, dtype=np.uint32)[None, :]
    h = (x * np.uint32(73856093)) ^ (y * np.uint32(19349663)) ^ np.uint32(salt * 83492791 & 0xFFFFFFFF)
    return (h >> np.uint32(7)) & np.uint32(0xFF)


def _tomo_pattern(ctx: _Context, values: tuple[int, int, int, int]) -> NDArray[np.uint16]:
    """A cross-section: background, body ellipse, dense ring, and a feature moving with the slice."""
    background, body, ring, feature = values
    side = image_side(ctx.kb, 2)
    y, x = _grid(side)
    z = (ctx.index + 0.5) / ctx.count * 2.0 - 1.0
    r2 = (x / 0.82) ** 2 + (y / 0.68) ** 2
    out = np.full((side, side), background, dtype=np.float32)
    out[r2 < 1.0] = body
    out[(r2 < 0.55) & (r2 > 0.45)] = ring
    dx, dy = x - 0.35 * z, y + 0.1 * math.sin(3 * z + ctx.salt)
    out[dx * dx + dy * dy < 0.012] = feature
    out += (_texture(side, ctx.salt + ctx.index) % 24).astype(np.float32) * (r2 < 1.0)
    return np.clip(out, 0, 4095).astype(np.uint16)


def _projection_pattern(ctx: _Context, *, left_edge: bool) -> NDArray[np.uint16]:
    """A radiograph: smooth attenuation profile with an anatomical blob (breast-like when ``left_edge``)."""
    side = image_side(ctx.kb, 2)
    y, x = _grid(side)
    # breast outline against the chest-wall side of the detector, or a trunk/limb in the middle
    r2 = ((x + 1.0) / 1.3) ** 2 + (y / 0.85) ** 2 if left_edge else (x / 0.75) ** 2 + (y / 0.9) ** 2
    out = np.where(r2 < 1.0, 2600.0 - 900.0 * r2, 300.0).astype(np.float32)
    out += (_texture(side, ctx.salt + ctx.index) % 64).astype(np.float32) * (r2 < 1.0)
    return np.clip(out, 0, 4095).astype(np.uint16)


def _us_pattern(ctx: _Context) -> NDArray[np.uint8]:
    """A sector scan: speckle inside the fan, a dark cyst, and a colour-flow patch."""
    side = image_side(ctx.kb, 3)
    y, x = _grid(side)
    radius = np.sqrt(x * x + (y + 1.0) ** 2)
    fan = (radius < 1.9) & (radius > 0.2) & (np.abs(x) < (y + 1.0) * 0.75)
    grey = (_texture(side, ctx.salt + ctx.index) % 160 + 40).astype(np.uint8) * fan
    z = (ctx.index + 0.5) / ctx.count
    cyst = (x - 0.2 * z) ** 2 + (y - 0.1) ** 2 < 0.03
    grey = np.where(cyst, 8, grey).astype(np.uint8)
    rgb = np.stack([grey, grey, grey], axis=-1)
    flow = ((x + 0.3) ** 2 + (y - 0.4) ** 2 < 0.01) & fan
    rgb[flow] = (200, 30, 30)
    return rgb


# --------------------------------------------------------------------------- per SOP class


def _cross_section(ds: Dataset, ctx: _Context, pixel_mm: float) -> None:
    """Image Plane (PS3.3 C.7.6.2) and Frame of Reference (C.7.4.1), shared by the study's series."""
    side = int(ds.Rows)
    orientation = _ORIENTATION.get(ctx.spec.plane, _ORIENTATION["AXIAL"])
    pixel_mm = round(pixel_mm, 6)  # DS holds at most 16 characters (PS3.5 6.2)
    location = round((ctx.index - ctx.count / 2) * ctx.spec.thickness, 3)
    half = round(side * pixel_mm / 2, 3)
    if ctx.spec.plane == "SAGITTAL":
        position = [location, -half, half]
    elif ctx.spec.plane == "CORONAL":
        position = [-half, location, half]
    else:
        position = [-half, -half, location]
    ds.PixelSpacing = [pixel_mm, pixel_mm]
    ds.ImageOrientationPatient = list(orientation)
    ds.ImagePositionPatient = position
    ds.SliceThickness = ctx.spec.thickness
    ds.SliceLocation = location
    ds.FrameOfReferenceUID = deterministic_uid(ctx.study.study_instance_uid, "frame-of-reference")
    ds.PositionReferenceIndicator = ""
    ds.PatientPosition = "FFS" if ctx.series.body_part in ("KNEE", "LEG") else "HFS"


def _ct(ds: Dataset, ctx: _Context) -> None:
    """CT Image module (PS3.3 C.8.2.1): stored value = HU + 1024, 12 bits."""
    head = ctx.series.body_part == "HEADNECK"
    values = (24, 1064, 2024, 1324 if ctx.spec.contrast else 1084) if not head else (24, 1059, 2400, 1100)
    _pixels(ds, _tomo_pattern(ctx, values), bits_stored=12)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.RescaleIntercept = -1024
    ds.RescaleSlope = 1
    ds.RescaleType = "HU"
    ds.KVP = 120
    ds.ConvolutionKernel = ctx.spec.kernel or "STANDARD"
    ds.ReconstructionDiameter = 360
    ds.WindowCenter, ds.WindowWidth = (40, 80) if head else (40, 400)
    if ctx.spec.contrast:
        ds.ContrastBolusAgent = "Iodinated contrast IV"
    _cross_section(ds, ctx, 360.0 / int(ds.Rows))


def _mr(ds: Dataset, ctx: _Context) -> None:
    """MR Image module (PS3.3 C.8.3.1)."""
    scanning, variant, options, tr, te, ti, etl = _MR_SEQUENCES.get(ctx.spec.sequence, _MR_SEQUENCES["T2"])
    bright = ctx.spec.sequence in ("T2", "PDFS")
    _pixels(
        ds, _tomo_pattern(ctx, (0, 900 if bright else 600, 300 if bright else 1400, 1800)), bits_stored=12
    )
    ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
    ds.ScanningSequence = scanning
    ds.SequenceVariant = variant
    ds.ScanOptions = options
    ds.MRAcquisitionType = "2D"
    ds.RepetitionTime = tr
    ds.EchoTime = te
    if ti is not None:
        ds.InversionTime = ti
    ds.EchoTrainLength = etl
    ds.SequenceName = ctx.spec.sequence or "T2"
    ds.MagneticFieldStrength = 1.5
    ds.ImagingFrequency = 63.87
    ds.ImagedNucleus = "1H"
    ds.WindowCenter, ds.WindowWidth = 1000, 2000
    _cross_section(ds, ctx, (160.0 if ctx.series.body_part == "KNEE" else 240.0) / int(ds.Rows))


def _cr(ds: Dataset, ctx: _Context) -> None:
    """CR Series and CR Image modules (PS3.3 C.8.1.1, C.8.1.2)."""
    _pixels(ds, _projection_pattern(ctx, left_edge=False), bits_stored=12)
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ViewPosition = ctx.spec.view or "PA"
    lateral = ds.ViewPosition in ("LL", "RL")
    ds.PatientOrientation = ["P" if lateral else "L", "F"]
    ds.KVP = 120 if ctx.series.body_part == "UPPERTRUNK" else 55
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.PixelSpacing = [0.2, 0.2]
    ds.PixelSpacingCalibrationType = "GEOMETRY"
    ds.PixelSpacingCalibrationDescription = "Nominal detector pixel pitch"
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter, ds.WindowWidth = 1800, 3000


def _us(ds: Dataset, ctx: _Context) -> None:
    """US Image module (PS3.3 C.8.5.6): 8-bit RGB, single frame."""
    _pixels(ds, _us_pattern(ctx), bits_stored=8)
    ds.ImageType = [
        "ORIGINAL",
        "PRIMARY",
        "ABDOMINAL" if ctx.series.body_part == "LOWERTRUNK" else "VASCULAR",
        "0001",
    ]
    ds.PatientOrientation = ""
    region = Dataset()
    side = int(ds.Rows)
    region.RegionSpatialFormat = 1  # 2D
    region.RegionDataType = 1  # tissue
    region.RegionFlags = 0
    region.RegionLocationMinX0, region.RegionLocationMinY0 = 0, 0
    region.RegionLocationMaxX1, region.RegionLocationMaxY1 = side - 1, side - 1
    region.PhysicalUnitsXDirection = 3  # cm
    region.PhysicalUnitsYDirection = 3
    region.PhysicalDeltaX = 15.0 / side
    region.PhysicalDeltaY = 15.0 / side
    ds.SequenceOfUltrasoundRegions = Sequence([region])


def _mg(ds: Dataset, ctx: _Context) -> None:
    """DX Series/Anatomy/Image/Detector and Mammography Image modules (PS3.3 C.8.11), For Presentation."""
    laterality = ctx.spec.laterality or (ctx.study.laterality if ctx.study.laterality in ("L", "R") else "R")
    view = ctx.spec.view if ctx.spec.view in _MG_VIEWS else "CC"
    _pixels(ds, _projection_pattern(ctx, left_edge=True), bits_stored=12)
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    ds.ImageLaterality = laterality
    ds.AnatomicRegionSequence = Sequence([_code_item(_BREAST)])
    ds.PixelIntensityRelationship = "LIN"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.RescaleType = "US"
    ds.PresentationLUTShape = "IDENTITY"
    ds.WindowCenter, ds.WindowWidth = 2000, 3500
    ds.DetectorType = "DIRECT"
    ds.ImagerPixelSpacing = [0.1, 0.1]
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.OrganExposed = "BREAST"
    ds.PatientOrientation = _MG_ORIENTATION[(view, laterality)]
    view_item = _code_item(_MG_VIEWS[view])
    view_item.ViewModifierCodeSequence = Sequence()
    ds.ViewCodeSequence = Sequence([view_item])
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.KVP = 28
    ds.AcquisitionContextSequence = Sequence()


_BUILDERS: dict[str, Callable[[Dataset, _Context], None]] = {
    CT_IMAGE: _ct,
    MR_IMAGE: _mr,
    CR_IMAGE: _cr,
    US_IMAGE: _us,
    MG_FOR_PRESENTATION: _mg,
}
