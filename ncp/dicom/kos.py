"""KOS imaging study manifests (SOP class 1.2.840.10008.5.1.4.1.1.88.59): build, serialise, parse.

Two encodings of the same study (docs/architecture.md, "Manifests"):

* ``MADO``: title (MADOTEMP001, 99IHE) with a TID 1600 Image Library beside the TID 2010 references
  [IHE RAD MADO Rev 1.1 Vol 3 6.X.2.9, DICOM CP-2595], laid out as IHE's sample manifests are;
* ``MCWG``: classic XDS-I.b title (113030, DCM) with attribute extensions in the evidence sequence
  (Xt-EHR KOS specification, MCWG "Images Flagged as Significant").

A KIN (Key Object Selection "Of Interest", IHE KIN) lists a study's key images; both encodings
reference it. :func:`read_manifest` turns any of them, the IHE samples and a plain XDS-I.b manifest
into :class:`ncp.model.Manifest`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable, Iterator
from typing import Literal

from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

from ncp.codes import DCM, KOS_SOP_CLASS, LOINC, SCT, Code, region_by_body_part
from ncp.dicom.uids import validate_uid
from ncp.errors import InvalidRequest
from ncp.model import (
    InstanceRecord,
    Manifest,
    ManifestInstance,
    ManifestSeries,
    RequestRecord,
    SeriesRecord,
    StudyRecord,
)

__all__ = [
    "KIN_SERIES_NUMBER",
    "MANIFEST_SERIES_NUMBER",
    "TITLE_MADO",
    "TITLE_MANIFEST",
    "TITLE_OF_INTEREST",
    "Encoding",
    "build_kin",
    "build_manifest",
    "from_dicom_code",
    "read_dataset",
    "read_manifest",
    "to_dicom_code",
    "to_part10",
]

Encoding = Literal["MADO", "MCWG"]

MANIFEST_SERIES_NUMBER = 59  # Xt-EHR: "Series Number 59 if free"
KIN_SERIES_NUMBER = 60

# CID 7010 document titles and the MADO temporary title (until CP-2595 is final)
TITLE_MANIFEST = Code("113030", DCM, "Manifest")
TITLE_OF_INTEREST = Code("113000", DCM, "Of Interest")
TITLE_MADO = Code("MADOTEMP001", "99IHE", "Manifest with Description")

# SR concept names (DCM unless marked 99IHE: the temporary codes of MADO Rev 1.1 Vol 3 6.X.2.9, which
# DICOM CP-2595 replaces with final DCM codes)
_IMAGE_LIBRARY = Code("111028", DCM, "Image Library")
_IMAGE_LIBRARY_GROUP = Code("126200", DCM, "Image Library Group")
_MODALITY = Code("121139", DCM, "Modality")
_TARGET_REGION = Code("123014", DCM, "Target Region")
_PROCEDURE_CODE = Code("121023", DCM, "Procedure Code")
_STUDY_SERIES_COUNT = Code("MADOTEMP009", "99IHE", "Number of Study Related Series")
_SERIES_DESCRIPTION = Code("MADOTEMP002", "99IHE", "Series Description")
_SERIES_DATE = Code("MADOTEMP003", "99IHE", "Series Date")
_SERIES_TIME = Code("MADOTEMP004", "99IHE", "Series Time")
_SERIES_INSTANCE_COUNT = Code("MADOTEMP007", "99IHE", "Number of Series Related Instances")
_SERIES_NUMBER = Code("113607", DCM, "Series Number")
_SERIES_UID = Code("112002", DCM, "Series Instance UID")
_INSTANCE_NUMBER = Code("113609", DCM, "Instance Number")
_NUMBER_OF_FRAMES = Code("121140", DCM, "Number of Frames")
_DOCUMENT_TITLE = Code("121144", DCM, "Document Title")
_KEY_OBJECT_DESCRIPTION = Code("113012", DCM, "Key Object Description")

# FHIR system URI <-> DICOM Coding Scheme Designator (PS3.16 Table 8-1)
_DESIGNATORS = {SCT: "SCT", DCM: "DCM", LOINC: "LN"}
_SYSTEMS = {v: k for k, v in _DESIGNATORS.items()} | {"SRT": SCT}


# --------------------------------------------------------------------------- codes and small helpers


def to_dicom_code(code: Code) -> Dataset:
    """A Code Sequence item (PS3.3 Table 8.8-1) from a FHIR-style :class:`Code`."""
    item = Dataset()
    item.CodeValue = code.code
    item.CodingSchemeDesignator = _designator(code.system)
    item.CodeMeaning = code.display[:64]
    return item


def from_dicom_code(item: Dataset) -> Code:
    """The inverse of :func:`to_dicom_code`; unknown designators are kept as the system."""
    scheme = str(item.get("CodingSchemeDesignator", ""))
    value = str(item.get("CodeValue", "") or item.get("LongCodeValue", "") or item.get("URNCodeValue", ""))
    return Code(value, _SYSTEMS.get(scheme, scheme), str(item.get("CodeMeaning", "")))


def _designator(system: str) -> str:
    """Known schemes by their PS3.16 designator; any other system gets a private "99" designator
    (PS3.3 8.2.2) that the Coding Scheme Identification Sequence maps back to it."""
    if system in _DESIGNATORS:
        return _DESIGNATORS[system]
    if len(system) <= 16 and ":" not in system and "/" not in system:
        return system  # already a designator (e.g. 99IHE, UCUM)
    return "99" + hashlib.sha256(system.encode()).hexdigest()[:8].upper()


def _coding_schemes(codes: Iterable[Code]) -> Sequence:
    """Coding Scheme Identification Sequence (0008,0110) for the private designators in use (PS3.3 C.12.1)."""
    items = []
    for system in dict.fromkeys(c.system for c in codes):
        designator = _designator(system)
        if not designator.startswith("99") or designator == system:
            continue
        item = Dataset()
        item.CodingSchemeDesignator = designator
        if system.startswith("urn:oid:"):
            item.CodingSchemeUID = system.removeprefix("urn:oid:")
        item.CodingSchemeName = system[:64]
        items.append(item)
    return Sequence(items)


def _scheme_systems(ds: Dataset) -> dict[str, str]:
    """Designator -> FHIR system from the Coding Scheme Identification Sequence."""
    found = {}
    for item in ds.get("CodingSchemeIdentificationSequence", []):
        uid, name = str(item.get("CodingSchemeUID", "")), str(item.get("CodingSchemeName", ""))
        system = f"urn:oid:{uid}" if uid else name
        if system:
            found[str(item.get("CodingSchemeDesignator", ""))] = system
    return found


def _resolve(code: Code, systems: dict[str, str]) -> Code:
    return Code(code.code, systems[code.system], code.display) if code.system in systems else code


def _seq(*items: Dataset) -> Sequence:
    return Sequence(list(items))


def _issuer_item(oid: str) -> Dataset:
    """HL7 v2 HD-like issuer: Universal Entity ID + type ISO (PS3.3 Table 10-17)."""
    item = Dataset()
    item.UniversalEntityID = oid
    item.UniversalEntityIDType = "ISO"
    return item


def _content_item(relationship: str, value_type: str, name: Code | None = None) -> Dataset:
    item = Dataset()
    item.RelationshipType = relationship
    item.ValueType = value_type
    if name is not None:
        item.ConceptNameCodeSequence = _seq(to_dicom_code(name))
    return item


def _code_item(name: Code, value: Code, relationship: str = "HAS ACQ CONTEXT") -> Dataset:
    item = _content_item(relationship, "CODE", name)
    item.ConceptCodeSequence = _seq(to_dicom_code(value))
    return item


def _text_item(name: Code, value: str, relationship: str = "HAS ACQ CONTEXT") -> Dataset:
    item = _content_item(relationship, "TEXT", name)
    item.TextValue = value
    return item


def _num_item(name: Code, value: int, unit: str) -> Dataset:
    """NUM with a UCUM unit: not a KOS value type, hence the CP-2595 errors from dciodvfy."""
    item = _content_item("HAS ACQ CONTEXT", "NUM", name)
    measured = Dataset()
    measured.MeasurementUnitsCodeSequence = _seq(to_dicom_code(Code(unit, "UCUM", unit)))
    measured.NumericValue = str(value)
    item.MeasuredValueSequence = _seq(measured)
    return item


def _date_item(name: Code, value: str) -> Dataset:
    item = _content_item("HAS ACQ CONTEXT", "DATE", name)
    item.Date = value
    return item


def _time_item(name: Code, value: str) -> Dataset:
    item = _content_item("HAS ACQ CONTEXT", "TIME", name)
    item.Time = value
    return item


def _uidref_item(name: Code, value: str) -> Dataset:
    item = _content_item("HAS ACQ CONTEXT", "UIDREF", name)
    item.UID = value
    return item


def _sop_ref(sop_class: str, sop_instance: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    return item


def _reference_item(sop_class: str, sop_instance: str) -> Dataset:
    """A TID 2010 CONTAINS IMAGE/COMPOSITE item (KOS references, PS3.16 TID 2010 row 5)."""
    value_type = "COMPOSITE" if sop_class == KOS_SOP_CLASS else "IMAGE"
    item = _content_item("CONTAINS", value_type)
    item.ReferencedSOPSequence = _seq(_sop_ref(sop_class, sop_instance))
    return item


# --------------------------------------------------------------------------- builders


def build_manifest(
    study: StudyRecord,
    *,
    encoding: Encoding,
    manufacturer: str = "xcwado-testbed",
    timezone_offset: str = "+0000",
) -> Dataset:
    """The KOS imaging study manifest of ``study`` in the MADO or the MCWG (Xt-EHR) encoding."""
    if encoding not in ("MADO", "MCWG"):
        raise ValueError(f"unknown manifest encoding {encoding!r}")
    if not study.series:
        raise ValueError(f"study {study.study_instance_uid} has no series to reference")
    title = TITLE_MADO if encoding == "MADO" else TITLE_MANIFEST
    ds = _document_header(
        study,
        sop_instance_uid=study.manifest_sop_instance_uid,
        series_instance_uid=study.manifest_series_instance_uid,
        series_number=MANIFEST_SERIES_NUMBER,
        series_description="Imaging study manifest",
        title=title,
        manufacturer=manufacturer,
        timezone_offset=timezone_offset,
    )
    # MADO 6.X.2.6.1: the single accession in General Study; Xt-EHR: always empty there, all in A370
    single = study.accession_number if encoding == "MADO" else ""
    ds.AccessionNumber = single
    if single:
        ds.IssuerOfAccessionNumberSequence = _seq(_issuer_item(study.requests[0].accession_issuer))
    ds.ReferencedRequestSequence = Sequence([_request_item(study, r) for r in _unique_requests(study)])
    evidence = _evidence(study, encoding)
    ds.CurrentRequestedProcedureEvidenceSequence = _seq(evidence)
    if encoding == "MADO":
        ds.ContentSequence = Sequence(_mado_content(study))
    else:
        ds.ContentSequence = Sequence(_references(study))
    return ds


def build_kin(
    study: StudyRecord, *, manufacturer: str = "xcwado-testbed", timezone_offset: str = "+0000"
) -> Dataset:
    """The study's Key Image Note: a KOS titled (113000, DCM, "Of Interest") [IHE KIN, PS3.16 TID 2010]."""
    keys = study.key_images
    if not keys:
        raise ValueError(f"study {study.study_instance_uid} has no key images")
    if not study.kin_sop_instance_uid or not study.kin_series_instance_uid:
        raise ValueError(f"study {study.study_instance_uid} has no KIN SOP/series instance UID")
    ds = _document_header(
        study,
        sop_instance_uid=study.kin_sop_instance_uid,
        series_instance_uid=study.kin_series_instance_uid,
        series_number=KIN_SERIES_NUMBER,
        series_description="Key images",
        title=TITLE_OF_INTEREST,
        manufacturer=manufacturer,
        timezone_offset=timezone_offset,
    )
    ds.AccessionNumber = study.accession_number
    if study.accession_number:
        ds.IssuerOfAccessionNumberSequence = _seq(_issuer_item(study.requests[0].accession_issuer))
    ds.ReferencedRequestSequence = Sequence([_request_item(study, r) for r in _unique_requests(study)])
    evidence = Dataset()
    evidence.StudyInstanceUID = study.study_instance_uid
    evidence.ReferencedSeriesSequence = Sequence(
        _series_ref(s, [i for i in s.instances if i.significant], None)
        for s in study.series
        if any(i.significant for i in s.instances)
    )
    ds.CurrentRequestedProcedureEvidenceSequence = _seq(evidence)
    description = _text_item(_KEY_OBJECT_DESCRIPTION, kin_description(study), relationship="CONTAINS")
    refs = [_reference_item(i.sop_class_uid, i.sop_instance_uid) for i in keys]
    ds.ContentSequence = Sequence([description, *refs])
    return ds


def kin_description(study: StudyRecord) -> str:
    """The KIN's Key Object Description (113012), copied into the manifests that reference it."""
    return f"Key images of {study.description}" if study.description else "Key images"


def _document_header(
    study: StudyRecord,
    *,
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    series_description: str,
    title: Code,
    manufacturer: str,
    timezone_offset: str,
) -> Dataset:
    """Patient, General Study, Key Object Document Series, General Equipment, SOP Common, SR root."""
    if not sop_instance_uid or not series_instance_uid:
        raise ValueError(f"study {study.study_instance_uid} has no SOP/series instance UID for the KOS")
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = KOS_SOP_CLASS
    schemes = _coding_schemes(
        [study.procedure, study.anatomical_region, *(r.procedure for r in study.requests)]
    )
    if schemes:
        ds.CodingSchemeIdentificationSequence = schemes
    ds.SOPInstanceUID = sop_instance_uid
    ds.StudyDate = study.date
    ds.StudyTime = study.time
    ds.ContentDate = study.date  # deterministic: the generator derives everything from its seed
    ds.ContentTime = study.time
    ds.Modality = "KO"
    ds.Manufacturer = manufacturer
    ds.InstitutionName = study.institution[:64]
    ds.ReferringPhysicianName = ""
    ds.TimezoneOffsetFromUTC = timezone_offset
    ds.StudyDescription = study.description[:64]
    ds.SeriesDescription = series_description
    ds.ReferencedPerformedProcedureStepSequence = Sequence()
    _patient_module(ds, study)
    ds.StudyInstanceUID = study.study_instance_uid
    ds.SeriesInstanceUID = series_instance_uid
    ds.StudyID = ""
    ds.SeriesNumber = series_number
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = _seq(to_dicom_code(title))
    ds.ContinuityOfContent = "SEPARATE"
    template = Dataset()
    template.MappingResource = "DCMR"
    template.TemplateIdentifier = "2010"
    ds.ContentTemplateSequence = _seq(template)
    return ds


def _patient_module(ds: Dataset, study: StudyRecord) -> None:
    """Patient ID + issuer + qualifiers, and the same ID in Other Patient IDs (MADO 6.X.2.5)."""
    patient = study.patient
    ds.PatientName = f"{patient.family}^{patient.given}"
    ds.PatientID = patient.id
    ds.IssuerOfPatientID = patient.issuer
    ds.IssuerOfPatientIDQualifiersSequence = _seq(_issuer_item(patient.issuer))
    ds.PatientBirthDate = patient.birth_date
    ds.PatientSex = patient.sex
    other = Dataset()
    other.PatientID = patient.id
    other.IssuerOfPatientID = patient.issuer
    other.TypeOfPatientID = "TEXT"
    other.IssuerOfPatientIDQualifiersSequence = _seq(_issuer_item(patient.issuer))
    ds.OtherPatientIDsSequence = _seq(other)


def _unique_requests(study: StudyRecord) -> list[RequestRecord]:
    """One item per unique (accession, placer order) pair (MADO 6.X.2.8)."""
    seen: dict[tuple[str, str, str, str], RequestRecord] = {}
    for r in study.requests:
        seen.setdefault((r.accession_number, r.accession_issuer, r.placer_order_number, r.placer_issuer), r)
    return list(seen.values())


def _request_item(study: StudyRecord, request: RequestRecord) -> Dataset:
    """A Referenced Request Sequence (0040,A370) item (PS3.3 C.17.6.2, MADO 6.X.2.8)."""
    item = Dataset()
    item.AccessionNumber = request.accession_number
    item.IssuerOfAccessionNumberSequence = _seq(_issuer_item(request.accession_issuer))
    item.ReferencedStudySequence = Sequence()
    item.StudyInstanceUID = study.study_instance_uid
    item.RequestedProcedureDescription = request.procedure.display[:64]
    item.RequestedProcedureCodeSequence = _seq(to_dicom_code(request.procedure))
    item.OrderPlacerIdentifierSequence = _seq(_issuer_item(request.placer_issuer))
    item.RequestedProcedureID = ""
    item.PlacerOrderNumberImagingServiceRequest = request.placer_order_number
    item.FillerOrderNumberImagingServiceRequest = ""
    return item


def _series_ref(
    series: SeriesRecord, instances: Iterable[InstanceRecord], encoding: Encoding | None
) -> Dataset:
    """A Referenced Series Sequence item with its routing fields (MADO 6.X.2.14) and, for MCWG,
    the Xt-EHR series/instance attribute extensions."""
    item = Dataset()
    item.SeriesInstanceUID = series.series_instance_uid
    item.RetrieveLocationUID = series.retrieve_location_uid
    item.RetrieveURL = series.retrieve_url
    refs = []
    for inst in instances:
        ref = _sop_ref(inst.sop_class_uid, inst.sop_instance_uid)
        if encoding == "MCWG":
            ref.InstanceNumber = inst.instance_number
            if inst.frames is not None and inst.frames > 1:
                ref.NumberOfFrames = inst.frames
        refs.append(ref)
    item.ReferencedSOPSequence = Sequence(refs)
    if encoding == "MCWG":
        item.Modality = series.modality
        item.SeriesDescription = series.description[:64]
        item.SeriesDate = series.date
        item.SeriesTime = series.time
        item.SeriesNumber = series.series_number
    return item


def _kin_series_ref(study: StudyRecord, encoding: Encoding) -> Dataset | None:
    """The KIN lives in its own series, in the PACS that holds the study's first series."""
    if not study.kin_sop_instance_uid or not study.kin_series_instance_uid:
        return None
    home = study.series[0]
    item = Dataset()
    item.SeriesInstanceUID = study.kin_series_instance_uid
    item.RetrieveLocationUID = home.retrieve_location_uid
    item.RetrieveURL = home.retrieve_url
    ref = _sop_ref(KOS_SOP_CLASS, study.kin_sop_instance_uid)
    if encoding == "MCWG":
        ref.InstanceNumber = 1
        # MCWG "Images Flagged as Significant": the KIN's description travels with its reference
        ref.ContentSequence = _seq(_text_item(_KEY_OBJECT_DESCRIPTION, kin_description(study), "CONTAINS"))
        item.Modality = "KO"
        item.SeriesDescription = "Key images"
        item.SeriesDate = study.date
        item.SeriesTime = study.time
        item.SeriesNumber = KIN_SERIES_NUMBER
    item.ReferencedSOPSequence = _seq(ref)
    return item


def _evidence(study: StudyRecord, encoding: Encoding) -> Dataset:
    """Current Requested Procedure Evidence Sequence item: every instance of the study, by series."""
    evidence = Dataset()
    if encoding == "MCWG":
        # MCWG checklist 3.5: Modalities in Study as a study-level extension of the evidence item
        evidence.ModalitiesInStudy = list(_study_modalities(study))
    evidence.StudyInstanceUID = study.study_instance_uid
    series_items = [_series_ref(s, s.instances, encoding) for s in study.series]
    kin = _kin_series_ref(study, encoding)
    if kin is not None:
        series_items.append(kin)
    evidence.ReferencedSeriesSequence = Sequence(series_items)
    if encoding == "MCWG":
        _flag_key_images(evidence, study)
    return evidence


def _study_modalities(study: StudyRecord) -> tuple[str, ...]:
    found = list(study.modalities) or [s.modality for s in study.series]
    return tuple(dict.fromkeys(found))


def _flag_key_images(evidence: Dataset, study: StudyRecord) -> None:
    """MCWG "Images Flagged as Significant" V1.4: Related Series Sequence (0008,1250) in each key image's
    Referenced SOP item points at the KIN with Purpose of Reference (113000, DCM, "Of Interest")."""
    if not study.kin_sop_instance_uid or not study.kin_series_instance_uid:
        return
    keys = {i.sop_instance_uid for i in study.key_images}
    for series_item in evidence.ReferencedSeriesSequence:
        for ref in series_item.ReferencedSOPSequence:
            if ref.ReferencedSOPInstanceUID not in keys:
                continue
            kin_ref = _sop_ref(KOS_SOP_CLASS, study.kin_sop_instance_uid)
            kin_ref.PurposeOfReferenceCodeSequence = _seq(to_dicom_code(TITLE_OF_INTEREST))
            related = Dataset()
            related.SeriesInstanceUID = study.kin_series_instance_uid
            related.ReferencedSOPSequence = _seq(kin_ref)
            ref.RelatedSeriesSequence = _seq(related)


def _references(study: StudyRecord) -> Iterator[Dataset]:
    """TID 2010: one CONTAINS item per referenced instance, the KIN included."""
    for series in study.series:
        for inst in series.instances:
            yield _reference_item(inst.sop_class_uid, inst.sop_instance_uid)
    if study.kin_sop_instance_uid and study.kin_series_instance_uid:
        yield _reference_item(KOS_SOP_CLASS, study.kin_sop_instance_uid)


def _mado_content(study: StudyRecord) -> list[Dataset]:
    """MADO root content: Procedure Code, the TID 1600 Image Library, then the TID 2010 references."""
    procedure = _code_item(_PROCEDURE_CODE, study.procedure, relationship="HAS CONCEPT MOD")
    return [procedure, _image_library(study), *_references(study)]


def _image_library(study: StudyRecord) -> Dataset:
    """TID 1600 Image Library with MADO's study-level descriptors and one group per series."""
    groups = [_library_group(s, study.anatomical_region) for s in study.series]
    kin = _kin_group(study)
    if kin is not None:
        groups.append(kin)
    library = _content_item("CONTAINS", "CONTAINER", _IMAGE_LIBRARY)
    library.ContinuityOfContent = "SEPARATE"
    descriptors = [_code_item(_MODALITY, _modality_code(m)) for m in _study_modalities(study)]
    descriptors.append(_code_item(_TARGET_REGION, study.anatomical_region))
    descriptors.append(_num_item(_STUDY_SERIES_COUNT, len(groups), "{series}"))
    library.ContentSequence = Sequence([*descriptors, *groups])
    return library


def _modality_code(modality: str) -> Code:
    return Code(modality, DCM, modality)


def _group(
    modality: str,
    date: str,
    time: str,
    description: str,
    number: int,
    region: Code,
    uid: str,
    count: int,
) -> tuple[Dataset, list[Dataset]]:
    """An Image Library Group container and its TID 1602 series descriptors, in the order of IHE's
    samples (MADO_KOS_A/B). Target Region is MADO's ``series.bodySite`` (MADO Table 4.3-1)."""
    group = _content_item("CONTAINS", "CONTAINER", _IMAGE_LIBRARY_GROUP)
    group.ContinuityOfContent = "SEPARATE"
    descriptors = [
        _code_item(_MODALITY, _modality_code(modality)),
        _date_item(_SERIES_DATE, date),
        _time_item(_SERIES_TIME, time),
        _text_item(_SERIES_DESCRIPTION, description),
        _text_item(_SERIES_NUMBER, str(number)),
        _code_item(_TARGET_REGION, region),
        _uidref_item(_SERIES_UID, uid),
        _num_item(_SERIES_INSTANCE_COUNT, count, "{instances}"),
    ]
    return group, descriptors


def _library_group(series: SeriesRecord, study_region: Code) -> Dataset:
    # the series' own coarse region where its Body Part Examined is one (MCWG 2.1), else the study's
    region = region_by_body_part(series.body_part) or study_region
    group, descriptors = _group(
        series.modality,
        series.date,
        series.time,
        series.description,
        series.series_number,
        region,
        series.series_instance_uid,
        len(series.instances),
    )
    entries = [item for i in series.instances for item in _library_entry(i)]
    group.ContentSequence = Sequence([*descriptors, *entries])
    return group


def _library_entry(inst: InstanceRecord) -> list[Dataset]:
    """TID 1601 Image Library Entry as IHE's samples write it: the TID 1602 entry descriptors as
    siblings just before the IMAGE reference (TID 1601 itself nests them below it; docs/decisions.md)."""
    descriptors = [_text_item(_INSTANCE_NUMBER, str(inst.instance_number))]
    if inst.frames is not None and inst.frames > 1:
        descriptors.append(_num_item(_NUMBER_OF_FRAMES, inst.frames, "{frames}"))
    return [*descriptors, _reference_item(inst.sop_class_uid, inst.sop_instance_uid)]


def _kin_group(study: StudyRecord) -> Dataset | None:
    """The KIN's group: Document Title and Key Object Description, then the COMPOSITE entry, as in IHE's
    MADO_KOS_B. No Instance Number: MADO maps it from IMAGE entries only (MADO Table 4.3-1)."""
    if not study.kin_sop_instance_uid or not study.kin_series_instance_uid:
        return None
    group, descriptors = _group(
        "KO",
        study.date,
        study.time,
        "Key images",
        KIN_SERIES_NUMBER,
        study.anatomical_region,
        study.kin_series_instance_uid,
        1,
    )
    entry = [
        _code_item(_DOCUMENT_TITLE, TITLE_OF_INTEREST),
        _text_item(_KEY_OBJECT_DESCRIPTION, kin_description(study)),
        _reference_item(KOS_SOP_CLASS, study.kin_sop_instance_uid),
    ]
    group.ContentSequence = Sequence([*descriptors, *entry])
    return group


# --------------------------------------------------------------------------- Part 10


def to_part10(ds: Dataset) -> bytes:
    """``ds`` as a DICOM Part 10 file in Explicit VR Little Endian (PS3.10 7.1); ``ds`` is not changed."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = "NCP_XCWADO"
    out = Dataset(ds)  # shallow copy of the elements: the caller's dataset keeps its own file_meta
    out.file_meta = meta
    buf = io.BytesIO()
    out.save_as(buf, enforce_file_format=True, little_endian=True, implicit_vr=False)
    return buf.getvalue()


def read_dataset(data: bytes) -> Dataset:
    """Parse Part 10 bytes (or a bare Explicit VR LE dataset); raise InvalidRequest when it is not DICOM."""
    if not data:
        raise InvalidRequest("empty body: expected a DICOM Part 10 object")
    try:
        ds = dcmread(io.BytesIO(data), force=data[128:132] != b"DICM")
        if len(ds) == 0:
            raise InvalidRequest("not a readable DICOM object: no data elements")
        _require_complete(ds, data)
        for _ in ds.iterall():  # decode every value now, so that garbage fails here and not later
            pass
    except InvalidRequest:
        raise
    except Exception as exc:  # pydicom raises many types on garbage; all mean "not DICOM"
        raise InvalidRequest(f"not a readable DICOM object: {type(exc).__name__}: {exc}"[:300]) from None
    return ds


_UNDEFINED_LENGTH = 0xFFFFFFFF
_SEQUENCE_DELIMITER = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"  # (FFFE,E0DD), little endian


def _require_complete(ds: Dataset, data: bytes) -> None:
    """pydicom reads a truncated last element silently: check it ends where the data ends."""
    last = ds.get_item(max(ds.keys()))
    length, tell = getattr(last, "length", None), getattr(last, "value_tell", None)
    if length is None or tell is None:
        return
    if length == _UNDEFINED_LENGTH:
        complete = last.VR != "SQ" or data.endswith(_SEQUENCE_DELIMITER)
    else:
        complete = tell + length <= len(data)
    if not complete:
        raise InvalidRequest(f"truncated DICOM object: element {last.tag} runs past the end of the data")


# --------------------------------------------------------------------------- parsing

# MADO temporary codes and their final CP-2595 successors (MADO Table 4.3-1, KOS <-> FHIR mapping)
_SERIES_DESCRIPTION_CODES = {"MADOTEMP002", "131563"}
_MADO_TITLES = {"MADOTEMP001"}
_ENTRY_CODES = {_INSTANCE_NUMBER.code, _NUMBER_OF_FRAMES.code, _DOCUMENT_TITLE.code}
_ENTRY_CODES.add(_KEY_OBJECT_DESCRIPTION.code)

_Entry = dict[str, "str | Code | None"]


def read_manifest(source: bytes | Dataset) -> Manifest:
    """What a consumer learns from a KOS manifest (MADO, MCWG, plain XDS-I.b) or a KIN.

    Raises InvalidRequest, naming the reason, for anything that is not a usable KOS."""
    ds = read_dataset(bytes(source)) if isinstance(source, bytes | bytearray) else source
    _require_kos(ds)
    systems = _scheme_systems(ds)
    title = _resolve(from_dicom_code(ds.ConceptNameCodeSequence[0]), systems)
    evidence = list(ds.CurrentRequestedProcedureEvidenceSequence)
    library = _find_library(ds)
    encoding = _encoding(title, evidence, library)
    entries = _library_entries(library) if library is not None else {}
    series = tuple(
        _manifest_series(item, entries)
        for study in evidence
        for item in study.get("ReferencedSeriesSequence", [])
    )
    requests = ds.get("ReferencedRequestSequence", [])
    return Manifest(
        sop_instance_uid=_uid(ds, "SOPInstanceUID"),
        encoding=encoding,
        title=title,
        study_instance_uid=_uid(ds, "StudyInstanceUID"),
        patient_id=str(ds.get("PatientID", "")),
        issuer_of_patient_id=_str_or_none(ds.get("IssuerOfPatientID")),
        patient_id_issuer_oid=_qualifier_oid(ds),
        accession_numbers=_accessions(ds),
        placer_order_numbers=_placers(requests),
        modalities=_modalities(evidence, library, series),
        series=series,
        kin_sop_instance_uids=_kin_uids(encoding, evidence, series, entries),
        extras=_extras(ds, library, entries, systems),
    )


def _require_kos(ds: Dataset) -> None:
    sop_class = str(ds.get("SOPClassUID", ""))
    if not sop_class:
        raise InvalidRequest("not a KOS manifest: the object has no SOP Class UID (0008,0016)")
    if sop_class != KOS_SOP_CLASS:
        raise InvalidRequest(
            f"not a KOS manifest: SOP Class UID {sop_class} is not Key Object Selection Document Storage "
            f"({KOS_SOP_CLASS})"
        )
    if not ds.get("ConceptNameCodeSequence"):
        raise InvalidRequest("KOS without a document title: Concept Name Code Sequence (0040,A043) is empty")
    if not ds.get("CurrentRequestedProcedureEvidenceSequence"):
        raise InvalidRequest(
            "KOS references nothing: Current Requested Procedure Evidence Sequence (0040,A375) is empty"
        )
    _uid(ds, "StudyInstanceUID")


def _uid(item: Dataset, keyword: str) -> str:
    """UIDs of a manifest end up in URLs and paths: check their syntax once, here (PS3.5 9.1)."""
    value = str(item.get(keyword, "") or "")
    if not value:
        raise InvalidRequest(f"KOS item without {keyword}")
    return validate_uid(value, keyword)


def _str_or_none(value: object) -> str | None:
    return str(value) if value not in (None, "") else None


def _unique(values: Iterable[str | None]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(v for v in values if v))


def _placers(requests: Iterable[Dataset]) -> tuple[str, ...]:
    return _unique(str(r.get("PlacerOrderNumberImagingServiceRequest", "")) for r in requests)


def _qualifier_oid(ds: Dataset) -> str | None:
    items = ds.get("IssuerOfPatientIDQualifiersSequence") or []
    return _str_or_none(items[0].get("UniversalEntityID")) if items else None


def _accessions(ds: Dataset) -> tuple[str, ...]:
    """General Study accession (MADO single case) then every (0040,A370) accession (MADO 6.X.2.6.1)."""
    requests = ds.get("ReferencedRequestSequence", [])
    in_requests = (str(r.get("AccessionNumber", "")) for r in requests)
    return _unique([str(ds.get("AccessionNumber", "")), *in_requests])


def _concept(item: Dataset) -> str:
    names = item.get("ConceptNameCodeSequence") or []
    return str(names[0].get("CodeValue", "")) if names else ""


def _find_library(ds: Dataset) -> Dataset | None:
    for item in ds.get("ContentSequence", []):
        if item.get("ValueType") == "CONTAINER" and _concept(item) == _IMAGE_LIBRARY.code:
            return item  # type: ignore[no-any-return]
    return None


ManifestEncoding = Literal["MADO", "MCWG", "KOS"]


def _encoding(title: Code, evidence: list[Dataset], library: Dataset | None) -> ManifestEncoding:
    if title.code in _MADO_TITLES or library is not None:
        return "MADO"
    if title.code == TITLE_MANIFEST.code and _has_extensions(evidence):
        return "MCWG"
    return "KOS"


def _has_extensions(evidence: list[Dataset]) -> bool:
    """Xt-EHR attribute extensions: Modalities in Study, series Modality/Description, instance
    Instance Number or Related Series Sequence."""
    for study in evidence:
        if "ModalitiesInStudy" in study:
            return True
        for series in study.get("ReferencedSeriesSequence", []):
            if "Modality" in series or "SeriesDescription" in series:
                return True
            refs = series.get("ReferencedSOPSequence", [])
            if any("InstanceNumber" in r or "RelatedSeriesSequence" in r for r in refs):
                return True
    return False


def _item_value(item: Dataset) -> str | Code | None:
    """The value of a TEXT/NUM/CODE/UIDREF/DATE/TIME content item, as text or a Code."""
    value_type = str(item.get("ValueType", ""))
    if value_type == "CODE":
        codes = item.get("ConceptCodeSequence") or []
        return from_dicom_code(codes[0]) if codes else None
    if value_type == "NUM":
        measured = item.get("MeasuredValueSequence") or []
        return str(measured[0].get("NumericValue", "")) if measured else None
    keyword = {"TEXT": "TextValue", "UIDREF": "UID", "DATE": "Date", "TIME": "Time"}.get(value_type)
    return str(item.get(keyword, "")) if keyword else None


def _library_entries(library: Dataset) -> dict[str, _Entry]:
    """Instance-level TID 1601/1602 descriptors by SOP Instance UID, and per-series ones under
    ``series:<uid>``. Accepts descriptors nested below the entry (PS3.16 TID 1601) and, as IHE's samples
    and our builder write them, as siblings that precede the entry."""
    found: dict[str, _Entry] = {}
    for group in library.get("ContentSequence", []):
        if group.get("ValueType") != "CONTAINER" or _concept(group) != _IMAGE_LIBRARY_GROUP.code:
            continue
        series: _Entry = {}
        pending: _Entry = {}
        for item in group.get("ContentSequence", []):
            refs = item.get("ReferencedSOPSequence") or []
            if item.get("ValueType") in ("IMAGE", "COMPOSITE", "WAVEFORM") and refs:
                nested = {_concept(c): _item_value(c) for c in item.get("ContentSequence", [])}
                found[str(refs[0].get("ReferencedSOPInstanceUID", ""))] = {**pending, **nested}
                pending = {}
            elif _concept(item) in _ENTRY_CODES:
                pending[_concept(item)] = _item_value(item)
            else:
                series[_concept(item)] = _item_value(item)
        uid = series.get(_SERIES_UID.code)
        if isinstance(uid, str) and uid:
            found[f"series:{uid}"] = series
    return found


def _int_or_none(value: object) -> int | None:
    try:
        return int(str(value).strip())
    except (TypeError, ValueError):
        return None


def _code_value(value: str | Code | None) -> str | None:
    return value.code if isinstance(value, Code) else value


def _manifest_series(item: Dataset, entries: dict[str, _Entry]) -> ManifestSeries:
    uid = _uid(item, "SeriesInstanceUID")
    described = entries.get(f"series:{uid}", {})
    instances = tuple(_manifest_instance(ref, entries) for ref in item.get("ReferencedSOPSequence", []))
    modality = item.get("Modality") or _code_value(described.get(_MODALITY.code))
    description = item.get("SeriesDescription") or next(
        (v for k, v in described.items() if k in _SERIES_DESCRIPTION_CODES and isinstance(v, str)), None
    )
    return ManifestSeries(
        series_instance_uid=uid,
        retrieve_location_uid=_str_or_none(item.get("RetrieveLocationUID")),
        retrieve_url=_str_or_none(item.get("RetrieveURL")),
        instances=instances,
        modality=_str_or_none(modality),
        description=_str_or_none(description),
    )


def _manifest_instance(ref: Dataset, entries: dict[str, _Entry]) -> ManifestInstance:
    sop = _uid(ref, "ReferencedSOPInstanceUID")
    number = ref.get("InstanceNumber")
    if number is None:
        number = entries.get(sop, {}).get(_INSTANCE_NUMBER.code)
    return ManifestInstance(
        sop_class_uid=_uid(ref, "ReferencedSOPClassUID"),
        sop_instance_uid=sop,
        instance_number=_int_or_none(number),
        flagged_as=_flag(ref),
    )


def _flag(ref: Dataset) -> str | None:
    """MCWG: the CID 7010 code value (e.g. 113000) of the KOS that flags this instance as significant."""
    for related in ref.get("RelatedSeriesSequence", []):
        for kos in related.get("ReferencedSOPSequence", []):
            purposes = kos.get("PurposeOfReferenceCodeSequence") or []
            if purposes:
                return str(purposes[0].get("CodeValue", "")) or None
    return None


def _modalities(
    evidence: list[Dataset], library: Dataset | None, series: tuple[ManifestSeries, ...]
) -> tuple[str, ...]:
    """MADO: study-level Modality items of the Image Library; MCWG: Modalities in Study, else the
    acquisition modalities of the referenced series (KO left out)."""
    if library is not None:
        found = _unique(
            _code_value(_item_value(i))
            for i in library.get("ContentSequence", [])
            if _concept(i) == _MODALITY.code and i.get("ValueType") == "CODE"
        )
        if found:
            return found
    for study in evidence:
        value = study.get("ModalitiesInStudy")
        if value:
            return _unique([value] if isinstance(value, str) else [str(v) for v in value])
    return _unique(s.modality for s in series if s.modality != "KO")


def _kin_uids(
    encoding: str, evidence: list[Dataset], series: tuple[ManifestSeries, ...], entries: dict[str, _Entry]
) -> tuple[str, ...]:
    """MADO: entries whose Document Title is 113000; otherwise the referenced KOS instances and the KOS
    named in Related Series Sequences (MCWG "Images Flagged as Significant")."""
    if encoding == "MADO":
        return _unique(
            uid
            for uid, entry in entries.items()
            if _code_value(entry.get(_DOCUMENT_TITLE.code)) == TITLE_OF_INTEREST.code
        )
    referenced = [i.sop_instance_uid for s in series for i in s.instances if i.sop_class_uid == KOS_SOP_CLASS]
    flagging = [
        str(kos.get("ReferencedSOPInstanceUID", ""))
        for study in evidence
        for item in study.get("ReferencedSeriesSequence", [])
        for ref in item.get("ReferencedSOPSequence", [])
        for related in ref.get("RelatedSeriesSequence", [])
        for kos in related.get("ReferencedSOPSequence", [])
    ]
    return _unique([*referenced, *flagging])


def _extras(
    ds: Dataset, library: Dataset | None, entries: dict[str, _Entry], systems: dict[str, str]
) -> dict[str, object]:
    """Descriptive metadata for the DocumentReference and the consumer's level-2 selection."""
    requests = ds.get("ReferencedRequestSequence", [])
    extras: dict[str, object] = {
        "study_date": str(ds.get("StudyDate", "")),
        "study_time": str(ds.get("StudyTime", "")),
        "study_description": str(ds.get("StudyDescription", "")),
        "patient_name": str(ds.get("PatientName", "")),
        "institution": str(ds.get("InstitutionName", "")),
        "procedure_codes": [
            _resolve(from_dicom_code(c), systems)
            for r in requests
            for c in (r.get("RequestedProcedureCodeSequence") or [])
        ],
    }
    if library is not None:
        items = library.get("ContentSequence", [])
        regions = [_item_value(i) for i in items if _concept(i) == _TARGET_REGION.code]
        extras["anatomical_regions"] = [_resolve(r, systems) for r in regions if isinstance(r, Code)]
        described = {uid: e.get(_KEY_OBJECT_DESCRIPTION.code) for uid, e in entries.items()}
        extras["kin_descriptions"] = {uid: d for uid, d in described.items() if d}
    for item in ds.get("ContentSequence", []):
        value = _item_value(item) if _concept(item) == _PROCEDURE_CODE.code else None
        if isinstance(value, Code):
            extras["performed_procedure"] = _resolve(value, systems)
    return extras
