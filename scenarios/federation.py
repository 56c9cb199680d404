"""FD: more than two countries: architecture B (federated regional registries) and every pair."""

from __future__ import annotations

import json

from ncp.codes import TYPE_MANIFEST
from ncp.consumer.documents import DocumentEntry
from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import scenario
from ncp.scenario.steps import find_manifest, search_documents, summary

_THREE = "builtin:three-country"
_WAN = "builtin:wan"


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


@scenario(
    "FD-003",
    "Architecture B, one region down: the others' documents and an OperationOutcome",
    tags=("federation", "architecture-b", "three-country", "upstream"),
    mcwg=("1.2.5",),
    transactions=("ITI-67",),
    topology=_THREE,
)
def region_down(ctx: ScenarioContext) -> None:
    """A regional registry is unreachable: the responding NCP still answers with what the other regions
    hold and reports the failed region as an OperationOutcome entry (search.mode = outcome)."""
    b = next((c for c in ctx.countries if ctx.topology.country(c).architecture == "B"), None)
    ctx.require(b is not None, "the topology has an architecture-B country")
    assert b is not None
    country = ctx.topology.country(b)
    down = country.registries[-1].id
    other = next(c for c in ctx.countries if c != b)
    patient = ctx.data[b].patients[0]
    studies = [s for s in ctx.studies(b) if s.patient == patient]
    alive = sorted(
        s.study_instance_uid
        for s in studies
        if country.registry_of(s.series[0].retrieve_location_uid) != down
    )
    consumer = ctx.consumer(other, patient)
    with ctx.outage(f"{b}/registry/{down}"), ctx.step(f"NCP-{other} searches while region {down} is down"):
        r = search_documents(ctx, consumer, other, patient, type=TYPE_MANIFEST.token())
        ctx.require(r.status_code == 200, f"a searchset despite the outage (got {r.status_code})")
        entries = r.json().get("entry", [])
        matches = [e["resource"] for e in entries if e.get("search", {}).get("mode") != "outcome"]
        outcomes = [e["resource"] for e in entries if e.get("search", {}).get("mode") == "outcome"]
        found = sorted(DocumentEntry.from_resource(d).study_instance_uid or "" for d in matches)
        ctx.check(
            "the other regions' manifests are found",
            found == alive,
            f"{len(found)} found, {len(alive)} expected",
            mcwg=("1.2.5",),
        )
        text = json.dumps(outcomes)
        ctx.check(
            "an OperationOutcome entry names the region that failed",
            any(o.get("resourceType") == "OperationOutcome" for o in outcomes) and down in text,
            text[:200],
        )


@scenario(
    "FD-004",
    "Three steps across a 30 ms wide-area link",
    tags=("federation", "link"),
    mcwg=("1.7.1",),
    transactions=("ITI-67", "ITI-68", "RAD-160"),
    topology=_WAN,
)
def across_a_wide_area_link(ctx: ScenarioContext) -> None:
    """The gateways talk through the topology's emulated link (30 ms round trip, 100 Mbit/s, jitter):
    the whole study arrives, and every image request pays at least the link's round trip."""
    a, b = ctx.source, ctx.treatment
    link = ctx.topology.link(a, b)
    ctx.require(link is not None and link.rtt_ms > 0, f"the topology shapes the {a}-{b} link")
    assert link is not None
    study = ctx.studies(a)[0]
    consumer = ctx.consumer(b, study.patient)
    manifest = consumer.retrieve_manifest(find_manifest(ctx, consumer, study))
    with ctx.step(f"RAD-160 across the {a}-{b} link ({link.rtt_ms:g} ms, {link.bandwidth_mbit:g} Mbit/s)"):
        r = consumer.retrieve_images(ctx.hcid(a), manifest)
        ctx.check("every instance arrived", r.complete, summary(r), mcwg=("1.7.1",))
        fastest = min(s.ttfb for s in r.series)
        ctx.check(
            "every image request waited at least one round trip for its first byte",
            fastest >= link.rtt_ms / 1000,
            f"fastest first byte {fastest * 1000:.1f} ms",
        )
