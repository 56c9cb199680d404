"""XB: the three cross-border steps end to end (identify, find + select, manifest, images)."""

from __future__ import annotations

from ncp.consumer.client import ImagingConsumer
from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import scenario
from ncp.scenario.steps import check_manifest, find_manifest, retrieve_all, two_pacs

_STEPS = ("ITI-67", "ITI-68", "RAD-160")
_CONTENT = ("1.4", "3.4", "3.5", "3.6.4", "3.9.2", "1.7.1")


def _three_steps(ctx: ScenarioContext, encoding: str) -> None:
    """Level-1 query by region and modality, level-2 selection by procedure, the manifest in ``encoding``
    (MADO or MCWG), every series."""
    a, b = ctx.source, ctx.treatment
    study = ctx.studies(a)[0]
    consumer = ctx.consumer(b, study.patient)
    with ctx.step("level-1 query (region + modality), level-2 selection (procedure)"):
        level1 = consumer.find(
            study.patient.issuer,
            study.patient.id,
            region=study.anatomical_region.token(),
            modality=study.modalities[0],
        )
        ctx.check(
            "level-1 keys find the study",
            study.study_instance_uid in {e.study_instance_uid for e in level1},
            f"{len(level1)} documents",
            mcwg=("1.1", "2.1", "2.2", "1.2.4"),
        )
        chosen = [
            e
            for e in ImagingConsumer.select(level1, procedure=study.procedure.display)
            if e.kind == "manifest"
        ]
        ctx.check(
            "level-2 selection by procedure display name leaves the study",
            [e.study_instance_uid for e in chosen] == [study.study_instance_uid],
            f"'{study.procedure.display}' -> {len(chosen)} manifest(s)",
            mcwg=("1.1", "2.5"),
        )
        ctx.require(bool(chosen), "a manifest is selected")
    manifest = check_manifest(ctx, consumer, chosen[0], study)
    # read_manifest tells MADO (TID 1600 library or its title) from MCWG (Xt-EHR attribute extensions)
    ctx.check(
        f"manifest in the {encoding} encoding",
        manifest.encoding == encoding,
        f"read as {manifest.encoding}",
    )
    retrieve_all(
        ctx, consumer, manifest, a, mcwg=("1.2.1",) if ctx.topology.country(a).architecture == "A" else ()
    )


@scenario(
    "XB-001",
    "Three steps with MADO manifests",
    tags=("happy", "three-steps", "mado"),
    mcwg=("1.1", "1.2.1", "1.2.4", "2.1", "2.2", "2.5", *_CONTENT),
    transactions=_STEPS,
    encoding="MADO",
)
def three_steps_mado(ctx: ScenarioContext) -> None:
    """Country B consults a patient of country A; the manifests are in the IHE MADO encoding."""
    _three_steps(ctx, "MADO")


@scenario(
    "XB-002",
    "Three steps with MCWG manifests",
    tags=("happy", "three-steps", "mcwg"),
    mcwg=("1.1", "1.2.1", "1.2.4", "2.1", "2.2", "2.5", *_CONTENT),
    transactions=_STEPS,
    encoding="MCWG",
)
def three_steps_mcwg(ctx: ScenarioContext) -> None:
    """Country B consults a patient of country A; the manifests are in the MCWG/Xt-EHR encoding."""
    _three_steps(ctx, "MCWG")


@scenario(
    "XB-003",
    "Publication variant A: manifest and validated report",
    tags=("happy", "publication"),
    mcwg=("2.17", "3.2.1"),
    transactions=("ITI-67", "ITI-68"),
)
def variant_a(ctx: ScenarioContext) -> None:
    """A study published with its validated report: both are found; the report is one PDF (MHD Minimal:
    one content per DocumentReference)."""
    study = ctx.study(ctx.source, lambda s: s.publication == "A", "published in variant A")
    consumer = ctx.consumer(ctx.treatment, study.patient)
    with ctx.step("find every document of the study"):
        docs = consumer.find(study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid)
        kinds = sorted(e.kind for e in docs)
        ctx.check(
            "manifest and report found", kinds == ["manifest", "report"], str(kinds), mcwg=("2.17", "3.2.1")
        )
    report = next((e for e in docs if e.kind == "report"), None)
    ctx.require(report is not None, "a report is found")
    assert report is not None
    types = [c.get("attachment", {}).get("contentType") for c in report.raw.get("content", [])]
    ctx.check("the report DocumentReference has one content (MHD Minimal)", len(types) == 1, str(types))
    with ctx.step("retrieve the report (ITI-68) as PDF"):
        pdf = consumer.retrieve_document(report, "application/pdf")
        ctx.check("report PDF", pdf.startswith(b"%PDF"), f"{len(pdf)} bytes")


@scenario(
    "XB-004",
    "Publication variant B: manifest before the report",
    tags=("happy", "publication"),
    mcwg=("2.17", "3.2.2"),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
)
def variant_b(ctx: ScenarioContext) -> None:
    """A study published at acquisition: only its manifest is found, and its images can be retrieved."""
    study = ctx.study(ctx.source, lambda s: s.publication == "B", "published in variant B")
    consumer = ctx.consumer(ctx.treatment, study.patient)
    with ctx.step("find every document of the study"):
        docs = consumer.find(study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid)
        kinds = sorted(e.kind for e in docs)
        ctx.check("only the manifest found", kinds == ["manifest"], str(kinds), mcwg=("2.17", "3.2.2"))
    ctx.require(bool(docs), "the manifest is found")
    manifest = check_manifest(ctx, consumer, docs[0], study)
    retrieve_all(ctx, consumer, manifest, ctx.source, mcwg=("3.2.2",))


@scenario(
    "XB-005",
    "A study spread over two PACS",
    tags=("happy", "architecture-a", "multi-pacs"),
    mcwg=("1.2.1", "3.9.2"),
    transactions=_STEPS,
)
def two_pacs_study(ctx: ScenarioContext) -> None:
    """Architecture A: the series of one study lie on two PACS; both Retrieve Location UIDs are served."""
    study = ctx.study(ctx.source, two_pacs, "spread over two PACS")
    consumer = ctx.consumer(ctx.treatment, study.patient)
    entry = find_manifest(ctx, consumer, study)
    manifest = check_manifest(ctx, consumer, entry, study)
    locations = {s.retrieve_location_uid for s in manifest.series}
    ctx.check(
        "two Retrieve Location UIDs in the manifest",
        len(locations) == 2,
        f"{len(locations)}",
        mcwg=("1.2.1",),
    )
    retrieve_all(ctx, consumer, manifest, ctx.source, mcwg=("1.2.1",))


@scenario(
    "XB-006",
    "Central VNA (architecture C) consulted from abroad",
    tags=("happy", "architecture-c"),
    mcwg=("1.2.2", "1.7.1"),
    transactions=_STEPS,
)
def central_vna(ctx: ScenarioContext) -> None:
    """The reverse direction: country A consults a patient of country B, whose images sit in one VNA."""
    c = next((code for code in ctx.countries if ctx.topology.country(code).architecture == "C"), None)
    ctx.require(c is not None, "the topology has an architecture-C country")
    assert c is not None
    other = next(code for code in ctx.countries if code != c)
    study = ctx.studies(c)[0]
    consumer = ctx.consumer(other, study.patient)
    entry = find_manifest(ctx, consumer, study)
    manifest = check_manifest(ctx, consumer, entry, study)
    retrieve_all(ctx, consumer, manifest, c, mcwg=("1.2.2",))


@scenario(
    "XB-007",
    "Every study of country A, byte for byte",
    tags=("happy", "bulk"),
    mcwg=("1.7.1", "2.9"),
    transactions=_STEPS,
)
def every_study(ctx: ScenarioContext) -> None:
    """Each study of country A is found by its UID and retrieved complete from country B."""
    for study in ctx.studies(ctx.source):
        consumer = ctx.consumer(ctx.treatment, study.patient)
        entry = find_manifest(ctx, consumer, study)
        with ctx.step(f"retrieve study {study.study_instance_uid[-8:]}"):
            retrieval = consumer.retrieve_images(ctx.hcid(ctx.source), consumer.retrieve_manifest(entry))
            ctx.check(
                "complete", retrieval.complete, f"{retrieval.instances}/{retrieval.expected}", mcwg=("1.7.1",)
            )
