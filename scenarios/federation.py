"""FD: more than two countries: architecture B (federated regional registries) and every pair."""

from __future__ import annotations

from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import scenario
from ncp.scenario.steps import find_manifest

_THREE = "builtin:three-country"


@scenario(
    "FD-001",
    "Architecture B: a country with regional registries",
    tags=("federation", "architecture-b", "three-country"),
    mcwg=("1.2.5", "1.7.1"),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
    topology=_THREE,
)
def architecture_b(ctx: ScenarioContext) -> None:
    """Every study of the architecture-B country's patients is found through its NCP (fan-out over the
    regional registries) and retrieved from its region's PACS. MHD stands in for XCA-I here."""
    b = next((c for c in ctx.countries if ctx.topology.country(c).architecture == "B"), None)
    ctx.require(b is not None, "the topology has an architecture-B country")
    assert b is not None
    other = next(c for c in ctx.countries if c != b)
    regions: set[str] = set()
    for patient in ctx.data[b].patients:
        studies = [s for s in ctx.studies(b) if s.patient == patient]
        consumer = ctx.consumer(other, patient)
        with ctx.step(f"NCP-{other} searches every document of {patient.id}"):
            found = consumer.find(patient.issuer, patient.id, kind="manifest")
            ctx.check(
                "one manifest per study, from every region",
                sorted(e.study_instance_uid or "" for e in found)
                == sorted(s.study_instance_uid for s in studies),
                f"{len(found)} found, {len(studies)} expected",
                mcwg=("1.2.5",),
            )
        for entry in found:
            with ctx.step(f"retrieve ...{(entry.study_instance_uid or '')[-10:]}"):
                manifest = consumer.retrieve_manifest(entry)
                regions |= {s.retrieve_location_uid or "" for s in manifest.series}
                r = consumer.retrieve_images(ctx.hcid(b), manifest)
                ctx.check("complete", r.complete, f"{r.instances}/{r.expected}", mcwg=("1.2.5", "1.7.1"))
    ctx.check(
        "images came from more than one region",
        len(regions) > 1,
        f"{len(regions)} locations",
        mcwg=("1.2.5",),
    )


@scenario(
    "FD-002",
    "Three countries reach each other",
    tags=("federation", "three-country"),
    mcwg=("1.7.1", "1.2.4"),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
    topology=_THREE,
)
def every_pair(ctx: ScenarioContext) -> None:
    """For every ordered pair (A, B) of countries, B retrieves a study of A complete."""
    for a in ctx.countries:
        study = ctx.studies(a)[0]
        for b in ctx.countries:
            if a == b:
                continue
            consumer = ctx.consumer(b, study.patient)
            entry = find_manifest(ctx, consumer, study)
            with ctx.step(f"NCP-{b} retrieves from NCP-{a}"):
                r = consumer.retrieve_images(ctx.hcid(a), consumer.retrieve_manifest(entry))
                ctx.check(f"{b} <- {a} complete", r.complete, f"{r.instances}/{r.expected}", mcwg=("1.7.1",))
