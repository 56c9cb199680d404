"""``xcwado demo``: the three cross-border steps for a patient of country A, from country B.

Starts the topology as processes, seeds it through STOW-RS and ITI-65, then acts as a health
professional in B: identify, query (level 1), select (level 2), retrieve the manifest, retrieve
the images through XC-WADO and verify them against the manifest. Exit status 0 only when every
instance the manifest references arrived, and nothing else.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from ncp.consumer.client import ImagingConsumer, Retrieval
from ncp.federation import Federation
from ncp.model import StudyRecord
from ncp.publish import Published, seed_federation
from ncp.synth import catalogue_json

__all__ = ["DemoResult", "pick_study", "run_demo"]


@dataclass
class DemoResult:
    ok: bool
    checks: list[tuple[str, bool, str]]


def pick_study(published: Published) -> StudyRecord:
    """A study that shows the most: spread over two PACS, with key images, report published."""

    def score(s: StudyRecord) -> tuple[int, int, int]:
        return (
            len({x.retrieve_location_uid for x in s.series}),
            int(bool(s.key_images)),
            int(s.study_instance_uid in published.reports),
        )

    chosen: StudyRecord = max(published.data.studies, key=score)
    return chosen


def run_demo(
    source: str,
    run_dir: Path,
    *,
    treatment: str | None = None,
    affiliation: str | None = None,
    console: Console | None = None,
) -> DemoResult:
    console = console or Console()
    with Federation(source, run_dir, mode="process") as fed:
        topology = fed.topology
        codes = list(topology.countries)
        a = affiliation or codes[0]
        b = treatment or next(c for c in codes if c != a)
        console.rule(f"[bold]XC-WADO demo[/]: a health professional in {b} consults a patient of {a}")
        console.print(
            f"Federation '{topology.name}' is up: {len(fed.plan.roles)} role processes on 127.0.0.1"
        )
        published = asyncio.run(seed_federation(topology, fed.plan.endpoints))
        fed.catalogue = {"patients": [p for pub in published.values() for p in catalogue_json(pub.data)]}
        fed.write_state(run_dir / "state.json")
        console.print(f"Seeded through STOW-RS and ITI-65; state file: {run_dir / 'state.json'}")
        return _three_steps(console, fed, published[a], b)


def _three_steps(console: Console, fed: Federation, pub: Published, b: str) -> DemoResult:
    checks: list[tuple[str, bool, str]] = []
    study = pick_study(pub)
    patient = study.patient
    hcid = fed.topology.country(patient.country).home_community_id
    consumer = ImagingConsumer(fed.plan.endpoints[b].gateway)
    secure = fed.plan.pki_dir is not None
    _portal(console, fed.plan.endpoints[b].gateway, b, patient.id, patient.country)
    try:
        console.rule("Step 0 - identify the patient (PDQm-style)")
        if secure:
            consumer.authenticate()
        res = consumer.identify(patient.issuer, patient.id)
        if secure:
            consumer.open_treatment_context(patient.issuer, patient.id)
        name = res.get("name", [{}])[0]
        checks.append(("patient identified", True, f"{name.get('family')} {patient.id}"))

        console.rule("Step 1 - find manifests and reports (ITI-67), level 1 then level 2")
        level1 = consumer.find(
            patient.issuer, patient.id, region=study.anatomical_region.token(), modality=study.modalities[0]
        )
        chosen = ImagingConsumer.select(level1, procedure=study.procedure.display)
        manifests = [
            e for e in chosen if e.kind == "manifest" and e.study_instance_uid == study.study_instance_uid
        ]
        checks.append(
            (
                "level-1 query + level-2 selection",
                len(manifests) == 1,
                f"{len(level1)} found, {len(chosen)} selected by '{study.procedure.display}'",
            )
        )
        targeted = consumer.find(patient.issuer, patient.id, study_uid=study.study_instance_uid)
        checks.append(
            (
                "targeted query by Study Instance UID",
                any(e.kind == "manifest" for e in targeted),
                f"{len(targeted)} documents",
            )
        )
        if not manifests:
            return _finish(console, consumer, checks)
        entry = manifests[0]
        checks.append(
            ("homeCommunityId kept on results", entry.home_community_id == hcid, str(entry.home_community_id))
        )

        console.rule("Step 2 - retrieve the KOS manifest (ITI-68)")
        manifest = consumer.retrieve_manifest(entry)
        checks.append(
            (
                f"{manifest.encoding} manifest parsed",
                manifest.study_instance_uid == study.study_instance_uid,
                f"{len(manifest.series)} series, {manifest.instance_count()} instances",
            )
        )
        reports = [e for e in targeted if e.kind == "report"]
        if reports:
            pdf = consumer.retrieve_document(reports[0], "application/pdf")
            checks.append(("report retrieved as PDF", pdf.startswith(b"%PDF"), f"{len(pdf)} bytes"))

        console.rule("Step 3 - retrieve images through NCP-B -> NCP-A -> PACS (XC-WADO, RAD-160)")
        with Progress(console=console, transient=True) as bar:
            task = bar.add_task("instances", total=manifest.instance_count())
            retrieval = consumer.retrieve_images(
                hcid, manifest, progress=lambda _b, n: bar.update(task, advance=n)
            )
        checks.append(
            ("every referenced instance arrived, nothing else", retrieval.complete, _summary(retrieval))
        )
        if manifest.kin_sop_instance_uids or manifest.key_image_uids():
            keys = consumer.retrieve_key_images(hcid, manifest)
            checks.append(("KIN key images only", keys.complete, _summary(keys)))
        return _finish(console, consumer, checks)
    finally:
        consumer.close()


def _portal(console: Console, gateway: str, b: str, patient_id: str, a: str) -> None:
    """Where a person can look while the federation runs (``xcwado up`` serves the same paths)."""
    console.print(f"Clinician's portal at NCP-{b}: {gateway}/portal/ (patient {patient_id}, issued by {a})")
    console.print(f"WIA facade (DICOMweb, bearer treatment token): {gateway}/wia/dicom-web")


def _summary(r: Retrieval) -> str:
    seconds = sum(s.seconds for s in r.series) or 1e-9
    return (
        f"{r.instances}/{r.expected} instances, {r.bytes / 1e6:.2f} MB in {len(r.series)} requests, "
        f"{r.bytes / 1e6 / seconds:.1f} MB/s"
    )


def _short(url: str) -> str:
    """Long UIDs abbreviated to their last digits, so a request fits on one line."""
    return re.sub(r"\b2\.25\.\d{20,}(\d{6})\b", r"…\1", url.split("://", 1)[-1].split("/", 1)[-1])


def _finish(console: Console, consumer: ImagingConsumer, checks: list[tuple[str, bool, str]]) -> DemoResult:
    wire = Table(title="Requests made by the consumer (country B)", show_lines=False)
    for col in ("step", "status", "ms", "bytes", "url"):
        wire.add_column(col, overflow="fold")
    for log in consumer.log:
        wire.add_row(log.step, str(log.status), f"{log.seconds * 1000:.1f}", str(log.bytes), _short(log.url))
    console.print(wire)
    table = Table(title="Checks")
    for col in ("check", "result", "evidence"):
        table.add_column(col, overflow="fold")
    for name, ok, detail in checks:
        table.add_row(name, "[green]PASS[/]" if ok else "[red]FAIL[/]", detail)
    console.print(table)
    ok = bool(checks) and all(c[1] for c in checks)
    console.print("[bold green]All steps verified.[/]" if ok else "[bold red]Some checks failed.[/]")
    return DemoResult(ok, checks)
