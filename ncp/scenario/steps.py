"""Building blocks the scenario scripts share: the three steps, one at a time, with their checks."""

from __future__ import annotations

import httpx

from ncp.consumer.client import ImagingConsumer, Retrieval
from ncp.consumer.documents import DocumentEntry
from ncp.model import Manifest, PatientRecord, StudyRecord
from ncp.scenario.context import ScenarioContext

__all__ = [
    "DICOM_MULTIPART",
    "auth_headers",
    "check_manifest",
    "find_manifest",
    "retrieve_all",
    "search_documents",
    "summary",
    "two_pacs",
    "xc_url",
]

DICOM_MULTIPART = 'multipart/related; type="application/dicom"'


def search_documents(
    ctx: ScenarioContext, consumer: ImagingConsumer, at: str, patient: PatientRecord, **params: str
) -> httpx.Response:
    """A raw ITI-67 search at ``at``'s gateway with the consumer's tokens: for negative paths and
    answers that the consumer library would turn into an exception."""
    return ctx.http(
        "GET",
        f"{ctx.gateway(at)}/fhir/DocumentReference",
        headers={**consumer.headers, "Accept": "application/fhir+json"},
        params={
            "patient.identifier": f"urn:oid:{patient.issuer}|{patient.id}",
            "status": "current",
            **params,
        },
    )


def two_pacs(study: StudyRecord) -> bool:
    return len({s.retrieve_location_uid for s in study.series}) > 1


def find_manifest(ctx: ScenarioContext, consumer: ImagingConsumer, study: StudyRecord) -> DocumentEntry:
    """Step 1, targeted by Study Instance UID (MCWG 2.9): exactly the study's manifest."""
    patient = study.patient
    with ctx.step("find the manifest by Study Instance UID (ITI-67)"):
        found = consumer.find(patient.issuer, patient.id, study_uid=study.study_instance_uid, kind="manifest")
        ctx.check(
            "exactly the study's manifest found",
            [e.study_instance_uid for e in found] == [study.study_instance_uid],
            f"{len(found)} manifest(s)",
            mcwg=("2.9", "1.2.4"),
        )
        ctx.require(bool(found), "the manifest is found")
        hcid = ctx.hcid(patient.country)
        ctx.check("homeCommunityId kept", found[0].home_community_id == hcid, str(found[0].home_community_id))
        return found[0]


def check_manifest(
    ctx: ScenarioContext, consumer: ImagingConsumer, entry: DocumentEntry, study: StudyRecord
) -> Manifest:
    """Step 2: the KOS (ITI-68) and the MCWG manifest content items."""
    with ctx.step("retrieve the KOS manifest (ITI-68)"):
        manifest = consumer.retrieve_manifest(entry)
        ctx.check(
            f"a DICOM KOS ({manifest.encoding}) for the study",
            manifest.study_instance_uid == study.study_instance_uid,
            f"{len(manifest.series)} series, {manifest.instance_count()} instances",
            mcwg=("1.4",),
        )
        ctx.check(
            "national patient ID + issuer are the primary Patient ID",
            manifest.patient_id == study.patient.id
            and study.patient.issuer in (manifest.patient_id_issuer_oid, manifest.issuer_of_patient_id),
            f"{manifest.patient_id} / {manifest.issuer_of_patient_id} / {manifest.patient_id_issuer_oid}",
            mcwg=("3.4",),
        )
        ctx.check(
            "Modalities in Study in the manifest",
            set(study.modalities) <= set(manifest.modalities),
            ", ".join(manifest.modalities),
            mcwg=("3.5",),
        )
        ctx.check(
            "Series Description on every series item",
            all(s.description for s in manifest.series),
            "; ".join(str(s.description) for s in manifest.series),
            mcwg=("3.6.4",),
        )
        ctx.check(
            "Retrieve URL and Retrieve Location UID on every series",
            all(s.retrieve_url and s.retrieve_location_uid for s in manifest.series),
            "; ".join(str(s.retrieve_url) for s in manifest.series),
            mcwg=("3.9.2",),
        )
        return manifest


def retrieve_all(
    ctx: ScenarioContext,
    consumer: ImagingConsumer,
    manifest: Manifest,
    country: str,
    mcwg: tuple[str, ...] = (),
) -> Retrieval:
    """Step 3: every series through RAD-160, verified against the manifest (nothing more, nothing less)."""
    with ctx.step("retrieve the images through XC-WADO (RAD-160)"):
        retrieval = consumer.retrieve_images(ctx.hcid(country), manifest)
        ctx.check(
            "every referenced instance arrived, nothing else",
            retrieval.complete,
            summary(retrieval),
            mcwg=("1.7.1", *mcwg),
        )
        return retrieval


def summary(r: Retrieval) -> str:
    problems = [s.error or f"missing {len(s.missing)}" for s in r.series if not s.complete]
    text = f"{r.instances}/{r.expected} instances, {r.bytes} bytes in {len(r.series)} requests"
    return text + (f"; {'; '.join(problems)}" if problems else "")


def xc_url(
    ctx: ScenarioContext, at: str, study: StudyRecord, *, hcid: str | None = None, rluid: str | None = None
) -> str:
    """The RAD-160 URL of the study's first series, at country ``at``'s gateway."""
    series = study.series[0]
    community = hcid or ctx.hcid(study.patient.country)
    return (
        f"{ctx.gateway(at)}/wado/homeCommunityId/{community}/RetrieveLocationUID/"
        f"{rluid or series.retrieve_location_uid}/studies/{study.study_instance_uid}"
        f"/series/{series.series_instance_uid}"
    )


def auth_headers(consumer: ImagingConsumer, accept: str = DICOM_MULTIPART) -> dict[str, str]:
    return {**consumer.headers, "Accept": accept}
