"""The catalogue's data model: what a country holds, independent of any encoding.

The synthetic generator produces these records; the KOS builder, the DocumentReference
builder and the state file's catalogue are all derived from them. A parsed manifest
(:class:`Manifest`) is what a consumer learns from a KOS, whoever wrote it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from ncp.codes import Code

__all__ = [
    "InstanceRecord",
    "Manifest",
    "ManifestInstance",
    "ManifestSeries",
    "PatientRecord",
    "ReportRecord",
    "RequestRecord",
    "SeriesRecord",
    "StudyRecord",
]

PublicationVariant = Literal["A", "B"]  # MCWG 2.17 / 3.2: A = with the validated report, B = before it


@dataclass(frozen=True)
class PatientRecord:
    """A patient of one country, identified by the national patient ID + issuer (bare OID)."""

    country: str
    id: str
    issuer: str
    family: str
    given: str
    birth_date: str  # YYYYMMDD
    sex: Literal["M", "F", "O"]


@dataclass(frozen=True)
class RequestRecord:
    """One (accession, placer order) pair: an item of the Referenced Request Sequence (0040,A370)."""

    accession_number: str
    accession_issuer: str  # bare OID
    placer_order_number: str
    placer_issuer: str  # bare OID
    procedure: Code  # requested procedure code (display name is the level-2 selection key)


@dataclass(frozen=True)
class InstanceRecord:
    sop_class_uid: str
    sop_instance_uid: str
    instance_number: int
    significant: bool = False  # a key image (referenced by the study's KIN, 113000 "Of Interest")
    frames: int | None = None


@dataclass(frozen=True)
class SeriesRecord:
    series_instance_uid: str
    modality: str
    series_number: int
    description: str
    date: str  # YYYYMMDD
    time: str  # HHMMSS
    body_part: str  # Body Part Examined (0018,0015), e.g. UPPERTRUNK
    retrieve_location_uid: str
    retrieve_url: str  # WADO-RS base URI of the PACS holding the series (MADO 6.X.2.14)
    instances: tuple[InstanceRecord, ...]


@dataclass(frozen=True)
class StudyRecord:
    study_instance_uid: str
    patient: PatientRecord
    requests: tuple[RequestRecord, ...]  # >= 1; m-n with orders and studies
    date: str  # YYYYMMDD
    time: str  # HHMMSS
    description: str
    modalities: tuple[str, ...]  # acquisition modalities (CID 29), study level
    anatomical_region: Code  # MCWG coarse region (SNOMED CT), level-1 key
    procedure: Code  # performed procedure (level-2 selection by display name)
    laterality: str | None  # 'L', 'R', 'B' or None (MCWG 2.6)
    institution: str
    series: tuple[SeriesRecord, ...]
    publication: PublicationVariant = "A"
    # UIDs of the objects the generator derives from this record (manifest, KIN)
    manifest_sop_instance_uid: str = ""
    manifest_series_instance_uid: str = ""
    kin_sop_instance_uid: str | None = None
    kin_series_instance_uid: str | None = None

    @property
    def accession_number(self) -> str:
        """The single accession of the study, or '' when several (MADO 6.X.2.6.1)."""
        accessions = {r.accession_number for r in self.requests}
        return accessions.pop() if len(accessions) == 1 else ""

    @property
    def key_images(self) -> tuple[InstanceRecord, ...]:
        return tuple(i for s in self.series for i in s.instances if i.significant)


@dataclass(frozen=True)
class ReportRecord:
    """An imaging report; its text is rendered as PDF and as a FHIR DiagnosticReport document."""

    id: str
    study: StudyRecord
    status: Literal["preliminary", "final"]
    conclusion: str
    findings: str
    author: str
    issued: str  # ISO 8601 date-time


@dataclass(frozen=True)
class ManifestInstance:
    sop_class_uid: str
    sop_instance_uid: str
    instance_number: int | None = None
    # CID 7010 title of the KOS/KIN this instance is flagged in (MCWG "Images Flagged as Significant")
    flagged_as: str | None = None


@dataclass(frozen=True)
class ManifestSeries:
    series_instance_uid: str
    retrieve_location_uid: str | None
    retrieve_url: str | None
    instances: tuple[ManifestInstance, ...]
    modality: str | None = None
    description: str | None = None


@dataclass(frozen=True)
class Manifest:
    """What a consumer reads from a KOS imaging study manifest, in either encoding."""

    sop_instance_uid: str
    encoding: Literal["MADO", "MCWG", "KOS"]  # KOS: a plain XDS-I.b manifest (title 113030, no extensions)
    title: Code
    study_instance_uid: str
    patient_id: str
    issuer_of_patient_id: str | None
    patient_id_issuer_oid: str | None  # Universal Entity ID of (0010,0024)
    accession_numbers: tuple[str, ...]
    placer_order_numbers: tuple[str, ...]
    modalities: tuple[str, ...]
    series: tuple[ManifestSeries, ...]
    # SOP Instance UIDs of referenced KIN documents (MADO: Document Title 113000 in TID 1600)
    kin_sop_instance_uids: tuple[str, ...] = ()
    extras: dict[str, Any] = field(default_factory=dict)

    def instance_count(self) -> int:
        return sum(len(s.instances) for s in self.series)

    def key_image_uids(self) -> tuple[str, ...]:
        """Instances the manifest itself flags as significant (MCWG encoding)."""
        return tuple(i.sop_instance_uid for s in self.series for i in s.instances if i.flagged_as is not None)
