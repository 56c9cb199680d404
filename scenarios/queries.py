"""QY: level-1 keys (region, modality), level-2 selection, targeted keys and m-n links (MCWG 1.1, 2.x)."""

from __future__ import annotations

from ncp.consumer.client import ImagingConsumer
from ncp.model import PatientRecord, StudyRecord
from ncp.scenario.context import ScenarioContext
from ncp.scenario.model import scenario


def _by_patient(studies: list[StudyRecord]) -> dict[PatientRecord, list[StudyRecord]]:
    out: dict[PatientRecord, list[StudyRecord]] = {}
    for s in studies:
        out.setdefault(s.patient, []).append(s)
    return out


def _uids(entries: list[object]) -> set[str]:
    return {str(getattr(e, "study_instance_uid", "")) for e in entries}


@scenario(
    "QY-001",
    "Level-1 query per anatomical region in the catalogue",
    tags=("query", "level-1"),
    mcwg=("1.1", "2.1"),
    transactions=("ITI-67",),
)
def per_region(ctx: ScenarioContext) -> None:
    """For every patient and every MCWG region of their studies: exactly the manifests of that region."""
    for patient, studies in _by_patient(ctx.studies(ctx.source)).items():
        consumer = ctx.consumer(ctx.treatment, patient)
        for region in sorted({s.anatomical_region for s in studies}, key=lambda c: c.code):
            with ctx.step(f"{patient.id}: anatomical-region={region.display}"):
                found = consumer.find(patient.issuer, patient.id, region=region.token(), kind="manifest")
                expected = {s.study_instance_uid for s in studies if s.anatomical_region == region}
                ctx.check(
                    f"exactly the {region.display} studies",
                    _uids(list(found)) == expected,
                    f"{len(found)} found, {len(expected)} expected",
                    mcwg=("2.1", "1.1"),
                )
                ctx.check(
                    "the region is on each result's event codes",
                    all(region.code in e.regions for e in found),
                    ", ".join(sorted({c for e in found for c in e.regions})),
                    mcwg=("2.1",),
                )


@scenario(
    "QY-002",
    "Level-1 query per study-level modality",
    tags=("query", "level-1"),
    mcwg=("1.1", "2.2"),
    transactions=("ITI-67",),
)
def per_modality(ctx: ScenarioContext) -> None:
    """For every patient and every acquisition modality of their studies: exactly those studies."""
    for patient, studies in _by_patient(ctx.studies(ctx.source)).items():
        consumer = ctx.consumer(ctx.treatment, patient)
        for modality in sorted({m for s in studies for m in s.modalities}):
            with ctx.step(f"{patient.id}: modality={modality}"):
                found = consumer.find(patient.issuer, patient.id, modality=modality, kind="manifest")
                expected = {s.study_instance_uid for s in studies if modality in s.modalities}
                ctx.check(
                    f"exactly the {modality} studies",
                    _uids(list(found)) == expected,
                    f"{len(found)} found, {len(expected)} expected",
                    mcwg=("2.2", "1.1"),
                )


def _names(study: StudyRecord, display: str) -> bool:
    """Whether the study carries the procedure name: performed, or requested (a shared request names both)."""
    names = {study.procedure.display, *(r.procedure.display for r in study.requests)}
    return any(display.lower() in n.lower() for n in names)


@scenario(
    "QY-003",
    "Level-2 selection by procedure display name",
    tags=("query", "level-2"),
    mcwg=("1.1", "2.5", "2.6"),
    transactions=("ITI-67",),
)
def by_procedure(ctx: ScenarioContext) -> None:
    """All documents of a patient, then the user picks by procedure display name (and laterality)."""
    for patient, studies in _by_patient(ctx.studies(ctx.source)).items():
        consumer = ctx.consumer(ctx.treatment, patient)
        with ctx.step(f"{patient.id}: every document, then select by procedure"):
            everything = [e for e in consumer.find(patient.issuer, patient.id) if e.kind == "manifest"]
            for study in studies:
                chosen = ImagingConsumer.select(everything, procedure=study.procedure.display)
                expected = {s.study_instance_uid for s in studies if _names(s, study.procedure.display)}
                ctx.check(
                    f"'{study.procedure.display}' selects its study",
                    _uids(list(chosen)) == expected,
                    f"{len(chosen)} selected of {len(everything)}",
                    mcwg=("2.5", "1.1"),
                )
                if study.laterality:
                    lat = ImagingConsumer.select(everything, laterality=study.laterality)
                    ctx.check(
                        f"laterality {study.laterality} selectable",
                        study.study_instance_uid in _uids(list(lat)),
                        f"{len(lat)}",
                        mcwg=("2.6",),
                    )


@scenario(
    "QY-004",
    "Targeted query by accession number",
    tags=("query", "targeted"),
    mcwg=("2.8",),
    transactions=("ITI-67",),
)
def by_accession(ctx: ScenarioContext) -> None:
    """Every study with a single accession is found by it, and the results carry the accession."""
    for study in ctx.studies(ctx.source, lambda s: bool(s.accession_number)):
        consumer = ctx.consumer(ctx.treatment, study.patient)
        with ctx.step(f"accession-number={study.accession_number}"):
            found = consumer.find(
                study.patient.issuer, study.patient.id, accession=study.accession_number, kind="manifest"
            )
            ctx.check(
                "the study is found",
                study.study_instance_uid in _uids(list(found)),
                f"{len(found)} manifest(s)",
                mcwg=("2.8",),
            )
            ctx.check(
                "every result carries the accession",
                all(study.accession_number in e.accession_numbers for e in found),
                "",
                mcwg=("2.8",),
            )


@scenario(
    "QY-005",
    "Targeted query by Study Instance UID",
    tags=("query", "targeted"),
    mcwg=("2.9",),
    transactions=("ITI-67",),
)
def by_study_uid(ctx: ScenarioContext) -> None:
    """Every study is found by its Study Instance UID, alone."""
    for study in ctx.studies(ctx.source):
        consumer = ctx.consumer(ctx.treatment, study.patient)
        with ctx.step(f"study-instance-uid=...{study.study_instance_uid[-10:]}"):
            found = consumer.find(
                study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
            )
            ctx.check(
                "exactly that study",
                [e.study_instance_uid for e in found] == [study.study_instance_uid],
                f"{len(found)}",
                mcwg=("2.9",),
            )


def _shared_order(s: StudyRecord, studies: list[StudyRecord]) -> bool:
    orders = {r.placer_order_number for r in s.requests}
    accessions = {r.accession_number for r in s.requests}
    return any(
        o != s
        and orders & {r.placer_order_number for r in o.requests}
        and not accessions & {r.accession_number for r in o.requests}
        for o in studies
    )


@scenario(
    "QY-006",
    "m-n: one order with two accessions",
    tags=("query", "m-n"),
    mcwg=("2.14",),
    transactions=("ITI-67",),
)
def order_two_accessions(ctx: ScenarioContext) -> None:
    """Two studies of one placer order, each with its own accession: the order links both (MADO 6.X.2.8.1)."""
    studies = ctx.studies(ctx.source)
    first = ctx.study(ctx.source, lambda s: _shared_order(s, studies), "sharing an order across accessions")
    order = first.requests[0]
    pair = [s for s in studies if order.placer_order_number in {r.placer_order_number for r in s.requests}]
    consumer = ctx.consumer(ctx.treatment, first.patient)
    with ctx.step(f"related={order.placer_order_number} (the placer order)"):
        found = consumer.find(
            first.patient.issuer,
            first.patient.id,
            kind="manifest",
            extra=[("related", f"urn:oid:{order.placer_issuer}|{order.placer_order_number}")],
        )
        ctx.check(
            "both studies of the order found",
            _uids(list(found)) == {s.study_instance_uid for s in pair},
            f"{len(found)} found, {len(pair)} expected",
            mcwg=("2.14",),
        )
    with ctx.step("each accession finds its own study, carrying the shared order"):
        for s in pair:
            got = consumer.find(s.patient.issuer, s.patient.id, accession=s.accession_number, kind="manifest")
            mine = [e for e in got if e.study_instance_uid == s.study_instance_uid]
            ctx.check(
                f"accession {s.accession_number} -> its study with order {order.placer_order_number}",
                len(mine) == 1 and order.placer_order_number in mine[0].placer_orders,
                f"{[e.placer_orders for e in mine]}",
                mcwg=("2.14", "2.8"),
            )


@scenario(
    "QY-007",
    "m-n: one accession with two studies",
    tags=("query", "m-n"),
    mcwg=("2.8", "2.14"),
    transactions=("ITI-67",),
)
def accession_two_studies(ctx: ScenarioContext) -> None:
    """Two studies under one accession: the accession finds both; each UID finds only its own."""
    studies = ctx.studies(ctx.source)

    def shares(s: StudyRecord) -> bool:
        acc = {r.accession_number for r in s.requests}
        return any(o != s and acc & {r.accession_number for r in o.requests} for o in studies)

    first = ctx.study(ctx.source, shares, "sharing its accession with another study")
    accession = first.requests[0].accession_number
    pair = {s.study_instance_uid for s in studies if accession in {r.accession_number for r in s.requests}}
    consumer = ctx.consumer(ctx.treatment, first.patient)
    with ctx.step(f"accession-number={accession}"):
        found = consumer.find(first.patient.issuer, first.patient.id, accession=accession, kind="manifest")
        ctx.check(
            "both studies found", _uids(list(found)) == pair, f"{len(found)} found", mcwg=("2.14", "2.8")
        )
    with ctx.step("each Study Instance UID finds one study"):
        for uid in sorted(pair):
            got = consumer.find(first.patient.issuer, first.patient.id, study_uid=uid, kind="manifest")
            ctx.check(f"...{uid[-10:]} alone", _uids(list(got)) == {uid}, f"{len(got)}", mcwg=("2.9", "2.14"))


@scenario(
    "QY-008",
    "m-n: one study with two placer orders",
    tags=("query", "m-n"),
    mcwg=("2.14",),
    transactions=("ITI-67", "ITI-68"),
)
def study_two_orders(ctx: ScenarioContext) -> None:
    """A combined examination requested twice: both orders are on the entry and in the manifest."""
    study = ctx.study(
        ctx.source, lambda s: len({r.placer_order_number for r in s.requests}) > 1, "with two placer orders"
    )
    orders = {r.placer_order_number for r in study.requests}
    consumer = ctx.consumer(ctx.treatment, study.patient)
    with ctx.step("find the study"):
        found = consumer.find(
            study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
        )
        ctx.require(len(found) == 1, "the study's manifest is found")
        ctx.check(
            "both orders in referenceIdList",
            orders <= set(found[0].placer_orders),
            ", ".join(found[0].placer_orders),
            mcwg=("2.14",),
        )
    for order in sorted(orders):
        with ctx.step(f"related={order}"):
            issuer = next(r.placer_issuer for r in study.requests if r.placer_order_number == order)
            got = consumer.find(
                study.patient.issuer,
                study.patient.id,
                kind="manifest",
                extra=[("related", f"urn:oid:{issuer}|{order}")],
            )
            ctx.check(
                f"order {order} finds the study",
                study.study_instance_uid in _uids(list(got)),
                f"{len(got)}",
                mcwg=("2.14",),
            )
    with ctx.step("both orders in the manifest"):
        manifest = consumer.retrieve_manifest(found[0])
        ctx.check(
            "Referenced Request Sequence has both orders",
            orders <= set(manifest.placer_order_numbers),
            ", ".join(manifest.placer_order_numbers),
            mcwg=("2.14",),
        )


@scenario(
    "QY-009",
    "Paged searchset: every page followed",
    tags=("query",),
    transactions=("ITI-67",),
)
def paging(ctx: ScenarioContext) -> None:
    """_count=1: the consumer follows every next link (kept under its gateway) and sees every document."""
    patient = ctx.studies(ctx.source)[0].patient
    consumer = ctx.consumer(ctx.treatment, patient)
    with ctx.step("all documents in one page"):
        whole = consumer.find(patient.issuer, patient.id)
    with ctx.step("the same, one document per page"):
        paged = consumer.find(patient.issuer, patient.id, page_size=1)
        ctx.check(
            "same documents, one request per page",
            sorted(e.id for e in paged) == sorted(e.id for e in whole),
            f"{len(paged)} documents in {len(ctx.steps[-1].exchanges) or '?'} pages",
        )
