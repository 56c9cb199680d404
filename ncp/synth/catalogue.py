"""Deterministic catalogue records: patients, orders ↔ accessions ↔ studies (m-n), series, reports.

Everything derives from ``random.Random(f"{seed}:{country}")`` and ``deterministic_uid``: the same
topology gives the same UIDs, names and bytes on every machine.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass

from ncp.codes import ANATOMICAL_REGIONS, LOINC, SCT, Code
from ncp.dicom.uids import deterministic_uid
from ncp.model import InstanceRecord, PatientRecord, ReportRecord, RequestRecord, SeriesRecord, StudyRecord
from ncp.topology import Country, Topology

__all__ = ["MODALITY_PLANS", "SOP_CLASSES", "build_catalogue"]

SOP_CLASSES = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",
    "MR": "1.2.840.10008.5.1.4.1.1.4",
    "CR": "1.2.840.10008.5.1.4.1.1.1",
    "US": "1.2.840.10008.5.1.4.1.1.6.1",
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",
}


@dataclass(frozen=True)
class _Plan:
    procedure: Code
    region: str  # SCT code of the MCWG coarse region
    laterality: str | None
    series: tuple[str, ...]  # series descriptions


# One plan per modality, cycled; display names are the level-2 selection keys (MCWG 2.5, 2.6).
MODALITY_PLANS: dict[str, tuple[_Plan, ...]] = {
    "CT": (
        _Plan(Code("24627-2", LOINC, "CT Chest"), "67734004", None, ("Thorax 1.25mm", "Thorax 5mm")),
        _Plan(Code("24725-4", LOINC, "CT Head"), "774007", None, ("Head axial", "Head bone")),
    ),
    "MR": (
        _Plan(Code("24590-2", LOINC, "MR Brain"), "774007", None, ("T1 sag", "T2 axial", "FLAIR axial")),
        _Plan(Code("24826-0", LOINC, "MR Knee left"), "61685007", "L", ("PD sag", "T1 cor", "PD fs axial")),
    ),
    "CR": (
        _Plan(Code("36643-5", LOINC, "XR Chest 2 Views"), "67734004", None, ("PA", "Lateral")),
        _Plan(Code("37637-6", LOINC, "XR Wrist right"), "53120007", "R", ("PA", "Lateral")),
    ),
    "US": (
        _Plan(Code("24558-9", LOINC, "US Abdomen"), "63337009", None, ("Abdomen",)),
        _Plan(Code("30704-1", LOINC, "US Heart"), "80891009", None, ("Echo 2D",)),
    ),
    "MG": (
        _Plan(
            Code("24606-6", LOINC, "MG Breast Screening bilateral"),
            "76752008",
            "B",
            ("R CC", "L CC", "R MLO", "L MLO"),
        ),
        _Plan(Code("26346-7", LOINC, "MG Breast left Diagnostic"), "76752008", "L", ("L CC", "L MLO")),
    ),
}
_ORDER = ("CT", "MR", "CR", "US", "MG")
_NAMES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "FR": (("MARTIN", "BERNARD", "DUBOIS", "THOMAS", "ROBERT"), ("Camille", "Louis", "Chloé", "Hugo", "Léa")),
    "AT": (("GRUBER", "HUBER", "WAGNER", "PICHLER", "STEINER"), ("Lukas", "Anna", "Felix", "Lena", "Jakob")),
    "NO": (("HANSEN", "JOHANSEN", "OLSEN", "LARSEN", "BERG"), ("Ingrid", "Ole", "Nora", "Emil", "Sofie")),
}
_DEFAULT_NAMES = (("DOE", "ROE", "POE", "MOE", "LOE"), ("Alex", "Sam", "Kim", "Robin", "Noa"))


def build_catalogue(
    topology: Topology, code: str, retrieve_urls: Mapping[str, str]
) -> tuple[tuple[PatientRecord, ...], tuple[StudyRecord, ...], tuple[ReportRecord, ...]]:
    country = topology.country(code)
    options = topology.synth
    rng = random.Random(f"{options.seed}:{code}")
    families, givens = _NAMES.get(code, _DEFAULT_NAMES)
    patients = tuple(
        PatientRecord(
            country=code,
            id=f"{code}{rng.randrange(10**8, 10**9)}",
            issuer=country.patient_id_issuer,
            family=families[i % len(families)],
            given=givens[(i * 2) % len(givens)],
            birth_date=f"{rng.randrange(1940, 2005)}{rng.randrange(1, 13):02d}{rng.randrange(1, 28):02d}",
            sex="F" if i % 2 else "M",
        )
        for i in range(options.patients_per_country)
    )
    groups = _pacs_groups(country)
    studies: list[StudyRecord] = []
    for p_index, patient in enumerate(patients):
        for s_index in range(options.studies_per_patient):
            n = p_index * options.studies_per_patient + s_index
            studies.append(_study(rng, country, patient, n, groups[n % len(groups)], retrieve_urls))
    linked = _link_requests(country, studies)
    reports = tuple(_report(s) for s in linked)
    return patients, tuple(linked), reports


def _pacs_groups(country: Country) -> list[tuple[str, ...]]:
    """Retrieve Location UIDs a study may spread over: all PACS, or one region's (architecture B)."""
    if country.architecture == "B":
        regions: dict[str, list[str]] = {}
        for p in country.pacs:
            regions.setdefault(p.registry or "", []).append(p.retrieve_location_uid)
        return [tuple(v) for v in regions.values()]
    return [tuple(p.retrieve_location_uid for p in country.pacs)]


def _study(
    rng: random.Random,
    country: Country,
    patient: PatientRecord,
    n: int,
    rluids: tuple[str, ...],
    retrieve_urls: Mapping[str, str],
) -> StudyRecord:
    modality = _ORDER[n % len(_ORDER)]
    plan = MODALITY_PLANS[modality][(n // len(_ORDER)) % len(MODALITY_PLANS[modality])]
    study_uid = deterministic_uid("study", country.code, patient.id, n)
    date = f"2026{rng.randrange(1, 11):02d}{rng.randrange(1, 28):02d}"
    time = f"{rng.randrange(7, 19):02d}{rng.randrange(0, 60):02d}{rng.randrange(0, 60):02d}"
    body_part = ANATOMICAL_REGIONS[plan.region][1]
    key_study = n % 2 == 0
    series = []
    for k, description in enumerate(plan.series):
        # a study spread over two PACS when the country has several: odd series go to the second
        rluid = rluids[k % len(rluids)] if n % 3 == 0 else rluids[n % len(rluids)]
        series_uid = deterministic_uid("series", study_uid, k)
        count = rng.randrange(3, 6)
        instances = tuple(
            InstanceRecord(
                sop_class_uid=SOP_CLASSES[modality],
                sop_instance_uid=deterministic_uid("sop", series_uid, i),
                instance_number=i + 1,
                significant=key_study and k == 0 and i in (1, 2),
            )
            for i in range(count)
        )
        series.append(
            SeriesRecord(
                series_instance_uid=series_uid,
                modality=modality,
                series_number=k + 1,
                description=description,
                date=date,
                time=time,
                body_part=body_part,
                retrieve_location_uid=rluid,
                retrieve_url=retrieve_urls.get(rluid, ""),
                instances=instances,
            )
        )
    return StudyRecord(
        study_instance_uid=study_uid,
        patient=patient,
        requests=(),
        date=date,
        time=time,
        description=plan.procedure.display,
        modalities=(modality,),
        anatomical_region=Code(plan.region, SCT, ANATOMICAL_REGIONS[plan.region][0]),
        procedure=plan.procedure,
        laterality=plan.laterality,
        institution=f"{country.name} University Hospital",
        series=tuple(series),
        publication="A" if n % 2 == 0 else "B",
        manifest_sop_instance_uid=deterministic_uid("manifest", study_uid),
        manifest_series_instance_uid=deterministic_uid("manifest-series", study_uid),
        kin_sop_instance_uid=deterministic_uid("kin", study_uid) if key_study else None,
        kin_series_instance_uid=deterministic_uid("kin-series", study_uid) if key_study else None,
    )


def _link_requests(country: Country, studies: list[StudyRecord]) -> list[StudyRecord]:
    """Orders ↔ accessions ↔ studies, m-n (MADO 6.X.2.8.1 worked examples):

    * study 1 has two requests under one accession: the order of study 0 and one of its own (two
      orders, one accession; and study 0's order now has two accessions);
    * studies 2 and 3 of one patient share one accession (one request, two studies);
    * every other study: one order, one accession.
    """
    from dataclasses import replace

    def request(acc: str, order: str, study: StudyRecord) -> RequestRecord:
        return RequestRecord(acc, country.accession_issuer, order, country.order_issuer, study.procedure)

    out: list[StudyRecord] = []
    for i, study in enumerate(studies):
        acc, order = f"A{country.code}{1000 + i}", f"P{country.code}{5000 + i}"
        reqs: tuple[RequestRecord, ...]
        if i == 1 and studies[0].patient == study.patient:
            reqs = (request(acc, f"P{country.code}{5000}", study), request(acc, order, study))
        elif i == 3 and studies[2].patient == study.patient:
            reqs = (request(f"A{country.code}{1002}", f"P{country.code}{5002}", study),)
        else:
            reqs = (request(acc, order, study),)
        out.append(replace(study, requests=reqs))
    return out


def _report(study: StudyRecord) -> ReportRecord:
    final = study.publication == "A"
    d = study.date
    return ReportRecord(
        id=deterministic_uid("report", study.study_instance_uid).replace("2.25.", "r")[:40],
        study=study,
        status="final" if final else "preliminary",
        findings=f"{study.procedure.display}: {len(study.series)} series reviewed. No acute abnormality.",
        conclusion="No acute findings." if final else "Preliminary: awaiting validation.",
        author=f"Dr. Radiologist ({study.institution})",
        issued=f"{d[:4]}-{d[4:6]}-{d[6:8]}T18:00:00Z",
    )
