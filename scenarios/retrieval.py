"""RT: step 3 variants: KIN key images only, rendered JPEG, retrieveURL routing, metadata, one instance."""

from __future__ import annotations

from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import scenario
from ncp.scenario.steps import auth_headers, check_manifest, find_manifest, retrieve_all, summary


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
