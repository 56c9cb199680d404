"""Instances for an external manifest (e.g. the IHE MADO sample), so a real-world KOS can be served."""

from __future__ import annotations

from collections.abc import Iterator

from pydicom.dataset import Dataset

from ncp.codes import SCT, Code
from ncp.model import InstanceRecord, Manifest, PatientRecord, SeriesRecord, StudyRecord
from ncp.synth.catalogue import SOP_CLASSES
from ncp.synth.images import instance_dataset

__all__ = ["instances_for_manifest"]

_MODALITY_BY_CLASS = {uid: modality for modality, uid in SOP_CLASSES.items()}


def instances_for_manifest(
    manifest: Manifest, *, instance_kb: int = 8, patient_name: str = "DOE^John", study_date: str = "20260224"
) -> Iterator[Dataset]:
    """One instance per referenced image, with exactly the manifest's UIDs and patient ID."""
    family, _, given = patient_name.partition("^")
    patient = PatientRecord(
        "XX", manifest.patient_id, manifest.patient_id_issuer_oid or "", family, given, "19770530", "M"
    )
    for number, ref in enumerate(manifest.series, start=1):
        images = [i for i in ref.instances if i.sop_class_uid in _MODALITY_BY_CLASS]
        if not images:
            continue
        modality = _MODALITY_BY_CLASS[images[0].sop_class_uid]
        series = SeriesRecord(
            series_instance_uid=ref.series_instance_uid,
            modality=modality,
            series_number=number,
            description=ref.description or f"Series {number}",
            date=study_date,
            time="120000",
            body_part="CHEST",
            retrieve_location_uid=ref.retrieve_location_uid or "",
            retrieve_url=ref.retrieve_url or "",
            instances=tuple(
                InstanceRecord(i.sop_class_uid, i.sop_instance_uid, i.instance_number or k + 1)
                for k, i in enumerate(images)
            ),
        )
        study = StudyRecord(
            study_instance_uid=manifest.study_instance_uid,
            patient=patient,
            requests=(),
            date=study_date,
            time="120000",
            description="External study",
            modalities=(modality,),
            anatomical_region=Code("67734004", SCT, "Upper trunk"),
            procedure=Code("x", SCT, "External"),
            laterality=None,
            institution="External",
            series=(series,),
        )
        for record in series.instances:
            ds = instance_dataset(study, series, record, instance_kb)
            if manifest.issuer_of_patient_id:
                ds.IssuerOfPatientID = manifest.issuer_of_patient_id
            yield ds
