"""Instances for an external manifest (e.g. the IHE MADO sample ``MADO_KOS_A.dcm``).

A real-world KOS names studies, series and SOP instances that no PACS of the testbed holds; this
synthesises one image per referenced instance, with exactly the manifest's Study/Series/SOP Class/
SOP Instance UIDs and patient ID, so the three steps can run against it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal

from pydicom.dataset import Dataset

from ncp.codes import ANATOMICAL_REGIONS, KOS_SOP_CLASS, SCT, Code
from ncp.model import (
    InstanceRecord,
    Manifest,
    ManifestSeries,
    PatientRecord,
    RequestRecord,
    SeriesRecord,
    StudyRecord,
)
from ncp.synth.images import MODALITY_BY_SOP_CLASS, instance_dataset
from ncp.synth.procedures import REGION_BODY_PART

__all__ = ["instances_for_manifest", "manifest_study"]

_WHOLE_BODY = "38266002"
_DA = re.compile(r"^\d{8}$")
_TM = re.compile(r"^\d{2,6}(\.\d{1,6})?$")


def instances_for_manifest(
    manifest: Manifest,
    *,
    instance_kb: int = 8,
    patient_name: str = "DOE^John",
    birth_date: str = "",
    sex: Literal["M", "F", "O"] = "O",
) -> Iterator[Dataset]:
    """One synthetic image per referenced instance of ``manifest``, lazily, in manifest order.

    References to KOS documents (a KIN listed in the evidence) are skipped: they are documents, not
    images. Any other SOP class the generator cannot build raises ValueError before anything is made."""
    study = manifest_study(manifest, patient_name=patient_name, birth_date=birth_date, sex=sex)
    return _generate(study, instance_kb, manifest.issuer_of_patient_id)


def _generate(study: StudyRecord, instance_kb: int, issuer_text: str | None) -> Iterator[Dataset]:
    for series in study.series:
        for record in series.instances:
            yield instance_dataset(
                study, series, record, instance_kb=instance_kb, issuer_of_patient_id=issuer_text
            )


def manifest_study(
    manifest: Manifest,
    *,
    patient_name: str = "DOE^John",
    birth_date: str = "",
    sex: Literal["M", "F", "O"] = "O",
) -> StudyRecord:
    """The catalogue record of an external manifest (what :func:`instances_for_manifest` builds from)."""
    unsupported = sorted(
        {
            i.sop_class_uid
            for s in manifest.series
            for i in s.instances
            if i.sop_class_uid not in MODALITY_BY_SOP_CLASS and i.sop_class_uid != KOS_SOP_CLASS
        }
    )
    if unsupported:
        raise ValueError(f"cannot synthesise instances of SOP class(es) {unsupported}")
    extras = manifest.extras
    family, _, given = patient_name.partition("^")
    patient = PatientRecord(
        country="",
        id=manifest.patient_id,
        issuer=manifest.patient_id_issuer_oid or "",
        family=family,
        given=given,
        birth_date=birth_date,
        sex=sex,
    )
    day = _text(extras.get("study_date"), _DA, "20260101")
    time = _text(extras.get("study_time"), _TM, "120000")
    region = _region(extras.get("anatomical_regions"))
    procedure = _procedure(extras)
    series = tuple(
        s
        for n, ref in enumerate(manifest.series, start=1)
        if (s := _series(ref, n, day, time, region)) is not None
    )
    return StudyRecord(
        study_instance_uid=manifest.study_instance_uid,
        patient=patient,
        requests=_requests(manifest),
        date=day,
        time=time,
        description=str(extras.get("study_description") or "External study"),
        modalities=tuple(dict.fromkeys(s.modality for s in series)) or manifest.modalities,
        anatomical_region=region,
        procedure=procedure,
        laterality=None,
        institution=str(extras.get("institution") or "External institution"),
        series=series,
        manifest_sop_instance_uid=manifest.sop_instance_uid,
    )


def _series(ref: ManifestSeries, number: int, day: str, time: str, region: Code) -> SeriesRecord | None:
    images = [i for i in ref.instances if i.sop_class_uid in MODALITY_BY_SOP_CLASS]
    if not images:
        return None
    return SeriesRecord(
        series_instance_uid=ref.series_instance_uid,
        modality=MODALITY_BY_SOP_CLASS[images[0].sop_class_uid],
        series_number=number,
        description=ref.description or f"Series {number}",
        date=day,
        time=time,
        body_part=REGION_BODY_PART.get(region.code, "WHOLEBODY"),
        retrieve_location_uid=ref.retrieve_location_uid or "",
        retrieve_url=ref.retrieve_url or "",
        instances=tuple(
            InstanceRecord(i.sop_class_uid, i.sop_instance_uid, i.instance_number or k)
            for k, i in enumerate(images, start=1)
        ),
    )


def _requests(manifest: Manifest) -> tuple[RequestRecord, ...]:
    """The manifest's accessions paired with its placer orders (issuers are not in the Manifest model)."""
    accessions = manifest.accession_numbers or ("",)
    orders = manifest.placer_order_numbers or ("",)
    if not manifest.accession_numbers and not manifest.placer_order_numbers:
        return ()
    none = Code("", "", "")
    return tuple(
        RequestRecord(acc, "", orders[min(k, len(orders) - 1)], "", none) for k, acc in enumerate(accessions)
    )


def _text(value: object, pattern: re.Pattern[str], default: str) -> str:
    return value if isinstance(value, str) and pattern.fullmatch(value) else default


def _region(values: object) -> Code:
    if isinstance(values, list) and values and isinstance(values[0], Code):
        first: Code = values[0]
        return first
    return Code(_WHOLE_BODY, SCT, ANATOMICAL_REGIONS[_WHOLE_BODY][0])


def _procedure(extras: dict[str, object]) -> Code:
    performed = extras.get("performed_procedure")
    if isinstance(performed, Code):
        return performed
    requested = extras.get("procedure_codes")
    if isinstance(requested, list) and requested and isinstance(requested[0], Code):
        first: Code = requested[0]
        return first
    return Code("", "", "")
