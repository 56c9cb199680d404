"""RT: step 3 variants: KIN key images only, rendered JPEG, retrieveURL routing, metadata, one instance,
missing instances, and a requester-side Orthanc pulling through XC-WADO."""

from __future__ import annotations

import hashlib
import tempfile
import time
from pathlib import Path

import httpx

from ncp.dicom.kos import to_part10
from ncp.orthanc import OrthancConfig, orthanc_available, run_orthanc
from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import ScenarioSkipped, scenario
from ncp.scenario.steps import auth_headers, check_manifest, find_manifest, retrieve_all, summary
from ncp.server import free_port


def _key_images(ctx: ScenarioContext) -> None:
    study = ctx.study(ctx.source, lambda s: bool(s.key_images), "with key images")
    consumer = ctx.consumer(ctx.treatment, study.patient)
    manifest = consumer.retrieve_manifest(find_manifest(ctx, consumer, study))
    with ctx.step(f"retrieve only the key images ({manifest.encoding} manifest)"):
        referenced = bool(manifest.kin_sop_instance_uids or manifest.key_image_uids())
        ctx.check(
            "the manifest references the KIN or flags its key images",
            referenced,
            f"KIN {len(manifest.kin_sop_instance_uids)}, flagged {len(manifest.key_image_uids())}",
            mcwg=("3.11",),
        )
        keys = consumer.retrieve_key_images(ctx.hcid(ctx.source), manifest)
        expected = {i.sop_instance_uid for i in study.key_images}
        ctx.check(
            "exactly the key images arrived",
            keys.complete and set(keys.hashes()) == expected,
            f"{summary(keys)}; {len(expected)} key images",
            mcwg=("3.11", "1.7.1"),
        )


@scenario(
    "RT-001",
    "KIN key images only (MADO manifest)",
    tags=("retrieval", "kin", "mado"),
    mcwg=("3.11",),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
    encoding="MADO",
)
def kin_mado(ctx: ScenarioContext) -> None:
    """MADO: the KIN is an instance of the manifest; the consumer reads it, then fetches its images."""
    _key_images(ctx)


@scenario(
    "RT-002",
    "KIN key images only (MCWG manifest)",
    tags=("retrieval", "kin", "mcwg"),
    mcwg=("3.11",),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
    encoding="MCWG",
)
def kin_mcwg(ctx: ScenarioContext) -> None:
    """MCWG: key images are flagged in the manifest itself; only those are retrieved."""
    _key_images(ctx)


@scenario(
    "RT-003",
    "Rendered JPEG through RAD-160",
    tags=("retrieval", "rendered"),
    mcwg=("1.7.3",),
    transactions=("RAD-160",),
)
def rendered(ctx: ScenarioContext) -> None:
    """Server-side viewing: the source renders an instance as JPEG (PS3.18 8.3.5.1), relayed across."""
    study = ctx.studies(ctx.source)[0]
    consumer = ctx.consumer(ctx.treatment, study.patient)
    manifest = consumer.retrieve_manifest(find_manifest(ctx, consumer, study))
    series = manifest.series[0]
    sop = series.instances[0].sop_instance_uid
    url = consumer.rad160_url(ctx.hcid(ctx.source), manifest, series, sop) + "/rendered"
    with ctx.step("GET .../instances/{uid}/rendered, Accept image/jpeg"):
        r = ctx.http("GET", url, headers=auth_headers(consumer, "image/jpeg"))
        ctx.check("200 image/jpeg", r.status_code == 200, r.headers.get("content-type", ""), mcwg=("1.7.3",))
        ctx.check(
            "a JPEG (SOI marker)", r.content[:2] == b"\xff\xd8", f"{len(r.content)} bytes", mcwg=("1.7.3",)
        )
    series_url = consumer.rad160_url(ctx.hcid(ctx.source), manifest, series) + "/rendered"
    with ctx.step("GET .../series/{uid}/rendered, Accept image/jpeg"):
        r = ctx.http("GET", series_url, headers=auth_headers(consumer, "image/jpeg"))
        ctx.check(
            "series rendered as JPEG", r.content[:2] == b"\xff\xd8", f"{r.status_code}", mcwg=("1.7.3",)
        )


@scenario(
    "RT-004",
    "Retrieval routed by the manifest's Retrieve URL",
    tags=("retrieval", "retrieve-url"),
    mcwg=("3.9.2",),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
)
def retrieve_url_mode(ctx: ScenarioContext) -> None:
    """The consumer passes each series' Retrieve URL (0008,1190) as retrieveURL; the source allowlists it."""
    study = ctx.studies(ctx.source)[0]
    consumer = ctx.consumer(ctx.treatment, study.patient, use_retrieve_url=True)
    manifest = check_manifest(ctx, consumer, find_manifest(ctx, consumer, study), study)
    retrieval = retrieve_all(ctx, consumer, manifest, ctx.source, mcwg=("3.9.2",))
    ctx.check(
        "every request carried retrieveURL",
        all("retrieveURL=" in s.url for s in retrieval.series),
        f"{len(retrieval.series)} requests",
        mcwg=("3.9.2",),
    )


@scenario(
    "RT-005",
    "Series metadata through RAD-160",
    tags=("retrieval", "metadata"),
    transactions=("RAD-160",),
)
def metadata(ctx: ScenarioContext) -> None:
    """The DICOM JSON metadata of a series lists exactly the manifest's instances (PS3.18 F.2)."""
    study = ctx.studies(ctx.source)[0]
    consumer = ctx.consumer(ctx.treatment, study.patient)
    manifest = consumer.retrieve_manifest(find_manifest(ctx, consumer, study))
    series = manifest.series[0]
    url = consumer.rad160_url(ctx.hcid(ctx.source), manifest, series) + "/metadata"
    with ctx.step("GET .../series/{uid}/metadata, Accept application/dicom+json"):
        r = ctx.http("GET", url, headers=auth_headers(consumer, "application/dicom+json"))
        ctx.require(r.status_code == 200, f"metadata answered 200 (got {r.status_code})")
        sops = {str(item.get("00080018", {}).get("Value", [""])[0]) for item in r.json()}
        expected = {i.sop_instance_uid for i in series.instances}
        ctx.check("exactly the manifest's instances", sops == expected, f"{len(sops)} / {len(expected)}")


@scenario(
    "RT-006",
    "One instance through RAD-160",
    tags=("retrieval",),
    mcwg=("1.7.1",),
    transactions=("RAD-160",),
)
def one_instance(ctx: ScenarioContext) -> None:
    """Instance-level RAD-160: one part, the instance asked for, in its native transfer syntax."""
    study = ctx.studies(ctx.source)[0]
    consumer = ctx.consumer(ctx.treatment, study.patient)
    manifest = consumer.retrieve_manifest(find_manifest(ctx, consumer, study))
    series = manifest.series[0]
    sop = series.instances[-1].sop_instance_uid
    with ctx.step("GET .../instances/{uid}"):
        r = ctx.http(
            "GET",
            consumer.rad160_url(ctx.hcid(ctx.source), manifest, series, sop),
            headers=auth_headers(consumer),
        )
        ctx.check(
            "200 multipart/related",
            r.status_code == 200 and "multipart/related" in r.headers.get("content-type", ""),
            f"{r.status_code} {r.headers.get('content-type', '')}",
        )
        ctx.check(
            "one DICOM part, the instance asked for",
            r.content.count(b"DICM") == 1 and sop.encode() in r.content,
            f"{len(r.content)} bytes",
            mcwg=("1.7.1",),
        )


@scenario(
    "RT-007",
    "Missing instances: 206 + Warning, reported as partial",
    tags=("retrieval", "negative", "partial"),
    transactions=("RAD-160",),
)
def missing_instances(ctx: ScenarioContext) -> None:
    """A PACS that lost an instance answers 206 with a Warning (PS3.18 10.4.1.2: the partial-content
    status); both gateways pass the status on and the consumer reports a partial study, never success."""
    study = ctx.study(ctx.source, lambda s: len(s.series[0].instances) > 1, "with a multi-instance series")
    consumer = ctx.consumer(ctx.treatment, study.patient)
    manifest = consumer.retrieve_manifest(find_manifest(ctx, consumer, study))
    wanted = study.series[0].series_instance_uid
    with ctx.lost_instance(study) as lost, ctx.step("retrieve the study while its PACS lacks one instance"):
        retrieval = consumer.retrieve_images(ctx.hcid(ctx.source), manifest)
        damaged = [s for s in retrieval.series if wanted in s.url]
        ctx.require(len(damaged) == 1, "the damaged series was requested")
        got = damaged[0]
        ctx.check("206 Partial Content for the damaged series", got.status == 206, f"got {got.status}")
        ctx.check("a Warning header says what is missing", bool(got.warning), str(got.warning))
        ctx.check(
            "every other instance arrived, the lost one did not",
            got.missing == {lost} and not got.unexpected,
            f"{len(got.received)}/{len(got.expected)} received",
        )
        others = [s for s in retrieval.series if s is not got]
        ctx.check(
            "every other series arrived whole",
            all(s.complete for s in others),
            "; ".join(f"{s.status} {len(s.received)}/{len(s.expected)}" for s in others),
        )
        ctx.check(
            "the consumer reports the study as partial, not complete",
            retrieval.partial and not retrieval.complete,
            summary(retrieval),
        )


@scenario(
    "RT-008",
    "Requester-side Orthanc pulls a study through XC-WADO",
    tags=("retrieval", "requester", "orthanc"),
    mcwg=("1.7.1",),
    transactions=("RAD-160",),
)
def requester_side_pull(ctx: ScenarioContext) -> None:
    """MCWG 1.7.1 requestor viewing: an Orthanc in country B, with the Initiating Imaging Gateway as
    its DICOMweb server (one per Retrieve Location UID, the consumer's tokens as headers), pulls every
    series of a manifest into its own storage; what it stores is byte for byte what country A holds."""
    if not orthanc_available():
        raise ScenarioSkipped("Orthanc is not installed (Debian packages orthanc, orthanc-dicomweb)")
    a, b = ctx.source, ctx.treatment
    study = ctx.studies(a)[0]
    consumer = ctx.consumer(b, study.patient)
    manifest = consumer.retrieve_manifest(find_manifest(ctx, consumer, study))
    headers = {k: v for k, v in consumer.headers.items() if k.lower() != "accept"}
    prefix = f"{ctx.gateway(b)}/wado/homeCommunityId/{ctx.hcid(a)}/RetrieveLocationUID/"
    servers = {
        str(rluid): {"Url": f"{prefix}{rluid}/", "HttpHeaders": headers}
        for rluid in {s.retrieve_location_uid for s in manifest.series}
    }
    wanted = {i.sop_instance_uid for s in manifest.series for i in s.instances}
    with tempfile.TemporaryDirectory(prefix="xcwado-requester-") as tmp:
        config = OrthancConfig(Path(tmp) / "orthanc", free_port(), name=f"{b}-requester", servers=servers)
        with run_orthanc(config), ctx.step(f"NCP-{b}'s Orthanc pulls {len(manifest.series)} series"):
            pulled = True
            for series in manifest.series:
                resource = {"Study": manifest.study_instance_uid, "Series": series.series_instance_uid}
                url = f"{config.dicomweb}servers/{series.retrieve_location_uid}/retrieve"
                r = ctx.http("POST", url, json={"Resources": [resource]})
                ok = r.status_code == 200
                pulled = pulled and ok
                ctx.check(f"Orthanc retrieves series ...{series.series_instance_uid[-8:]}", ok, r.text[:200])
                if not ok:  # what Orthanc met: the same request from here, for the evidence
                    ctx.http(
                        "GET",
                        consumer.rad160_url(ctx.hcid(a), manifest, series),
                        headers=auth_headers(consumer),
                    )
            # a refused pull stores nothing more later: what is there is the evidence, no wait for the rest
            stored = _stored(config, manifest.study_instance_uid, len(wanted) if pulled else 0)
        ctx.check(
            "every instance of the manifest stored, nothing else",
            set(stored) == wanted,
            f"{len(stored)}/{len(wanted)} instances",
        )
        expected = {
            str(ds.SOPInstanceUID): hashlib.sha256(to_part10(ds)).hexdigest()
            for ds in ctx.data[a].instances(study)
        }
        same = [uid for uid, digest in expected.items() if stored.get(uid) == digest]
        ctx.check(
            "every image byte for byte what country A holds (SHA-256)",
            len(same) == len(expected),
            f"{len(same)}/{len(expected)} identical",
            mcwg=("1.7.1",),
        )


def _stored(config: OrthancConfig, study_uid: str, count: int, wait_s: float = 30.0) -> dict[str, str]:
    """SOP Instance UID -> SHA-256 of the file Orthanc stored, once ``count`` instances are in (or the wait
    is over): Orthanc's native API returns the stored file itself."""
    deadline = time.monotonic() + wait_s
    while True:
        found = httpx.get(f"{config.dicomweb}studies/{study_uid}/instances", timeout=30)
        uids = [i["00080018"]["Value"][0] for i in found.json()] if found.status_code == 200 else []
        if len(uids) >= count or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    hashes = {}
    for uid in uids:
        orthanc_id = httpx.post(f"{config.base_url}/tools/lookup", content=uid, timeout=30).json()[0]["ID"]
        stored = httpx.get(f"{config.base_url}/instances/{orthanc_id}/file", timeout=30).content
        hashes[uid] = hashlib.sha256(stored).hexdigest()
    return hashes
