"""Deterministic catalogue records: patients, orders ↔ accessions ↔ studies (m-n), series, reports.

Every choice comes from ``random.Random(f"{seed}:{country}")`` (never the global generator) and
every UID from :func:`ncp.dicom.uids.deterministic_uid` (2.25 root, PS3.5 B.2): the same topology
gives the same records, UIDs and instance bytes on every machine.

Layout of a country's studies (``g`` = study index across the country, patient-major):

* modality cycles CT, MR, CR, US, MG (``g % 5``); a patient with a mammogram is female;
* m-n links (MADO Rev 1.1 Vol 3 6.X.2.8.1 worked examples), among the studies of one patient:
  one order with two accessions (two studies), one accession shared by two studies, and one CT
  study with two requests (two placer orders, one accession);
* study ``g`` goes to region ``g % regions`` (architecture B: the PACS of one regional registry);
  even studies with several series spread them over the region's PACS;
* publication variant A for even ``g``, B for odd (MCWG 2.17 / 3.2); key images when
  ``g % 4`` is 0 or 3 (about half the studies);
* the topology's first country has one more patient, last, whose name and study description are
  markup and script (:data:`MARKUP_FAMILY`, :data:`MARKUP_DESCRIPTION`): every page that shows data
  must render them as text. They stay valid DICOM (PN without ``=``/``\\``, LO within 64 characters).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from pydicom.dataset import Dataset

from ncp.codes import Code
from ncp.dicom.kos import to_part10
from ncp.dicom.uids import deterministic_uid
from ncp.errors import InvalidTopology
from ncp.model import (
    InstanceRecord,
    PatientRecord,
    ReportRecord,
    RequestRecord,
    SeriesRecord,
    StudyRecord,
)
from ncp.synth import people
from ncp.synth.images import SOP_CLASS_BY_MODALITY, instance_dataset
from ncp.synth.procedures import (
    COMBINED_CT,
    COMBINED_CT_REQUESTS,
    MODALITY_CYCLE,
    PROCEDURES,
    Procedure,
    SeriesSpec,
    region_code,
)
from ncp.topology import Country, Topology

__all__ = [
    "MARKUP_DESCRIPTION",
    "MARKUP_FAMILY",
    "MARKUP_GIVEN",
    "CountryData",
    "catalogue_json",
    "synthesize",
]

_FIRST_DAY = date(2025, 1, 6)
_DAYS = 600  # study dates spread over about 20 months
MARKUP_FAMILY = "<script>alert('name')</script>"
MARKUP_GIVEN = '<b onclick="alert(1)">Eve</b>'
MARKUP_DESCRIPTION = "<img src=x onerror=alert('study')> follow-up"


@dataclass(frozen=True)
class CountryData:
    """One country's synthetic catalogue; instances are generated on demand, one at a time."""

    country: str
    patients: tuple[PatientRecord, ...]
    studies: tuple[StudyRecord, ...]
    reports: tuple[ReportRecord, ...]
    instance_kb: int = 16
    # acquisition details per Series Instance UID (what the records do not carry)
    series_specs: Mapping[str, SeriesSpec] = field(default_factory=dict, repr=False, compare=False)

    def instances(self, study: StudyRecord) -> Iterator[Dataset]:
        """The study's image instances in series order, built lazily (bounded memory), same bytes per seed."""
        for series in study.series:
            spec = self.series_specs.get(series.series_instance_uid)
            for record in series.instances:
                yield instance_dataset(study, series, record, spec=spec, instance_kb=self.instance_kb)

    def instance_files(self, study: StudyRecord) -> Iterator[tuple[SeriesRecord, bytes]]:
        """The study's image instances as Part 10 files, in series order, each with its series.

        Each file is built once per process: the same study gives the same bytes in every federation
        (seeding a federation was 2 s of CPU, mostly pydicom writing these). The Retrieve URLs, which name
        each federation's ports, are in the manifests, never in an image, so they are not in the key."""
        bare = replace(study, series=tuple(replace(s, retrieve_url="") for s in study.series))
        for series, key in zip(study.series, bare.series, strict=True):
            spec = self.series_specs.get(series.series_instance_uid)
            for record in series.instances:
                build = _instance_file if self.instance_kb <= _MEMO_MAX_KB else _build_instance_file
                yield series, build(bare, key, record, spec, self.instance_kb)

    def report(self, study: StudyRecord) -> ReportRecord | None:
        uid = study.study_instance_uid
        return next((r for r in self.reports if r.study.study_instance_uid == uid), None)


_MEMO_MAX_KB = 64  # larger instances are built each time: the memo stays under 32 MB


def _build_instance_file(
    study: StudyRecord, series: SeriesRecord, record: InstanceRecord, spec: SeriesSpec | None, kb: int
) -> bytes:
    return to_part10(instance_dataset(study, series, record, spec=spec, instance_kb=kb))


# a memo of a pure function (the same records give the same bytes), not configuration
_instance_file = functools.lru_cache(maxsize=512)(_build_instance_file)


def synthesize(topology: Topology, country: str, *, retrieve_urls: Mapping[str, str]) -> CountryData:
    """The catalogue of ``country``; ``retrieve_urls`` maps each PACS's Retrieve Location UID to its
    WADO-RS base URI (MADO 6.X.2.14), written into ``SeriesRecord.retrieve_url``."""
    c = topology.country(country)
    missing = [p.retrieve_location_uid for p in c.pacs if p.retrieve_location_uid not in retrieve_urls]
    if missing:
        raise InvalidTopology(f"{country}: no WADO-RS base URI given for Retrieve Location UID(s) {missing}")
    return _Builder(topology, c, retrieve_urls).build()


# --------------------------------------------------------------------------- the builder


@dataclass(frozen=True)
class _Links:
    """Study indexes of the m-n cases (None when the country has too few studies for one)."""

    shared_order: tuple[int, int] | None  # one order, two accessions, two studies
    shared_accession: tuple[int, int] | None  # one accession (one request), two studies
    two_orders: int | None  # one study, two placer orders, one accession


def _plan_links(per_patient: int, patients: int) -> _Links:
    pairs = [
        (p * per_patient + k, p * per_patient + k + 1)
        for p in range(patients)
        for k in range(0, per_patient - 1, 2)
    ]
    shared_order = pairs[0] if pairs else None
    shared_accession = pairs[1] if len(pairs) > 1 else None
    total = per_patient * patients
    paired = {i for pair in pairs[:2] for i in pair}
    ct = [g for g in range(total) if MODALITY_CYCLE[g % len(MODALITY_CYCLE)] == "CT"]
    two_orders = next((g for g in ct if g not in paired), ct[0] if ct else None)
    return _Links(shared_order, shared_accession, two_orders)


class _Builder:
    def __init__(self, topology: Topology, country: Country, retrieve_urls: Mapping[str, str]) -> None:
        self.country = country
        self.options = topology.synth
        self.retrieve_urls = retrieve_urls
        self.rng = random.Random(f"{self.options.seed}:{country.code}")
        self.regions = _regions(country)
        self.institutions = people.institutions(country.code, country.name)
        self.specs: dict[str, SeriesSpec] = {}
        self.accession_base = self.rng.randrange(100_000, 900_000)
        self.order_base = self.rng.randrange(100_000, 900_000)
        self.markup = next(iter(topology.countries)) == country.code

    def uid(self, *parts: object) -> str:
        return deterministic_uid("ncp.synth", self.options.seed, self.country.code, *parts)

    def build(self) -> CountryData:
        per_patient, count = self.options.studies_per_patient, self.options.patients_per_country
        patients = self._patients(count, per_patient)
        links = _plan_links(per_patient, count)
        studies = [self._study(g, patients[g // per_patient], links) for g in range(count * per_patient)]
        studies = self._link(studies, links)
        if self.markup:  # drawn after every other record: their values do not change
            patients = (*patients, self._markup_patient())
            studies.append(self._markup_study(patients[-1]))
        reports = tuple(self._report(s) for s in studies)
        return CountryData(
            self.country.code, patients, tuple(studies), reports, self.options.instance_kb, dict(self.specs)
        )

    # -- patients

    def _patients(self, count: int, per_patient: int) -> tuple[PatientRecord, ...]:
        out: list[PatientRecord] = []
        for p in range(count):
            modalities = {
                MODALITY_CYCLE[(p * per_patient + k) % len(MODALITY_CYCLE)] for k in range(per_patient)
            }
            who = people.person(
                self.rng,
                self.country.code,
                sex="F" if "MG" in modalities else None,
                taken=frozenset(x.family for x in out),
            )
            out.append(
                PatientRecord(
                    country=self.country.code,
                    id=people.national_id(self.rng, self.country.code, who),
                    issuer=self.country.patient_id_issuer,
                    family=who.family,
                    given=who.given,
                    birth_date=who.birth_date,
                    sex=who.sex,
                )
            )
        return tuple(out)

    def _markup_patient(self) -> PatientRecord:
        who = people.Person(MARKUP_FAMILY, MARKUP_GIVEN, "F", "19800229")
        return PatientRecord(
            self.country.code,
            people.national_id(self.rng, self.country.code, who),
            self.country.patient_id_issuer,
            who.family,
            who.given,
            who.birth_date,
            who.sex,
        )

    def _markup_study(self, patient: PatientRecord) -> StudyRecord:
        """One study of the markup patient, next in the modality cycle, with its own accession and order."""
        g = self.options.patients_per_country * self.options.studies_per_patient
        study = self._study(g, patient, _Links(None, None, None))
        request = self._request(self._accession(g), self._order(g + 1), study.procedure)
        return replace(study, description=MARKUP_DESCRIPTION, requests=(request,))

    # -- studies and series

    def _procedure(self, g: int, links: _Links) -> Procedure:
        if g == links.two_orders:
            return COMBINED_CT
        return self.rng.choice(PROCEDURES[MODALITY_CYCLE[g % len(MODALITY_CYCLE)]])

    def _study(self, g: int, patient: PatientRecord, links: _Links) -> StudyRecord:
        procedure = self._procedure(g, links)
        day = _FIRST_DAY + timedelta(days=self.rng.randrange(_DAYS))
        study_date = day.strftime("%Y%m%d")
        study_time = (
            f"{self.rng.randrange(7, 18):02d}{self.rng.randrange(60):02d}{self.rng.randrange(60):02d}"
        )
        study_uid = self.uid("study", g)
        region = self.regions[g % len(self.regions)]
        series = self._series(g, study_uid, procedure, study_date, study_time, region)
        series = self._mark_key_images(g, series)
        keys = any(i.significant for s in series for i in s.instances)
        primary = [p.retrieve_location_uid for p in self.country.pacs].index(series[0].retrieve_location_uid)
        return StudyRecord(
            study_instance_uid=study_uid,
            patient=patient,
            requests=(),  # filled by _link
            date=study_date,
            time=study_time,
            description=procedure.code.display,
            modalities=(procedure.modality,),
            anatomical_region=region_code(procedure.region),
            procedure=procedure.code,
            laterality=procedure.laterality,
            institution=self.institutions[primary % len(self.institutions)],
            series=series,
            publication="A" if g % 2 == 0 else "B",
            manifest_sop_instance_uid=deterministic_uid(study_uid, "manifest"),
            manifest_series_instance_uid=deterministic_uid(study_uid, "manifest-series"),
            kin_sop_instance_uid=deterministic_uid(study_uid, "kin") if keys else None,
            kin_series_instance_uid=deterministic_uid(study_uid, "kin-series") if keys else None,
        )

    def _series(
        self, g: int, study_uid: str, procedure: Procedure, day: str, time: str, region: tuple[str, ...]
    ) -> tuple[SeriesRecord, ...]:
        spread = len(region) > 1 and len(procedure.series) > 1 and g % 2 == 0
        out = []
        for k, spec in enumerate(procedure.series):
            rluid = region[(g // 2 + k) % len(region)] if spread else region[(g // 2) % len(region)]
            series_uid = deterministic_uid(study_uid, "series", k + 1)
            count = self.rng.randint(*spec.instances)
            sop_class = SOP_CLASS_BY_MODALITY[procedure.modality]
            instances = tuple(
                InstanceRecord(sop_class, deterministic_uid(series_uid, "instance", n), n)
                for n in range(1, count + 1)
            )
            series_date, series_time = _later(day, time, minutes=4 + 6 * k)
            out.append(
                SeriesRecord(
                    series_instance_uid=series_uid,
                    modality=procedure.modality,
                    series_number=k + 1,
                    description=spec.description,
                    date=series_date,
                    time=series_time,
                    body_part=procedure.body_part,
                    retrieve_location_uid=rluid,
                    retrieve_url=self.retrieve_urls[rluid],
                    instances=instances,
                )
            )
            self.specs[series_uid] = spec
        return tuple(out)

    def _mark_key_images(self, g: int, series: tuple[SeriesRecord, ...]) -> tuple[SeriesRecord, ...]:
        """1-2 significant images (KIN "Of Interest") in about half the studies."""
        if g % 4 not in (0, 3):
            return series
        target = max(range(len(series)), key=lambda k: len(series[k].instances))
        instances = series[target].instances
        chosen = set(self.rng.sample(range(len(instances)), k=min(len(instances), self.rng.randint(1, 2))))
        marked = tuple(replace(i, significant=n in chosen) for n, i in enumerate(instances))
        return tuple(replace(s, instances=marked) if k == target else s for k, s in enumerate(series))

    # -- orders and accessions (m-n)

    def _accession(self, g: int) -> str:
        return f"{self.country.code}{self.accession_base + g:07d}"

    def _order(self, n: int) -> str:
        return f"{self.country.code}-ORD-{self.order_base + n:07d}"

    def _request(self, accession: str, order: str, procedure: Code) -> RequestRecord:
        c = self.country
        return RequestRecord(accession, c.accession_issuer, order, c.order_issuer, procedure)

    def _link(self, studies: list[StudyRecord], links: _Links) -> list[StudyRecord]:
        requests: dict[int, tuple[RequestRecord, ...]] = {
            g: (self._request(self._accession(g), self._order(g), s.procedure),)
            for g, s in enumerate(studies)
        }
        if links.shared_order is not None:  # 1 order -> 2 accessions -> 2 studies
            first, second = links.shared_order
            requests[second] = (
                self._request(self._accession(second), self._order(first), studies[second].procedure),
            )
        if links.shared_accession is not None:  # 1 accession -> 2 studies (same request)
            first, second = links.shared_accession
            requests[second] = requests[first]
        if links.two_orders is not None:  # 2 orders -> 1 accession -> 1 study
            g = links.two_orders
            accession, order = requests[g][0].accession_number, requests[g][0].placer_order_number
            requests[g] = (
                self._request(accession, order, COMBINED_CT_REQUESTS[0]),
                self._request(accession, self._order(len(studies)), COMBINED_CT_REQUESTS[1]),
            )
        return [replace(s, requests=requests[g]) for g, s in enumerate(studies)]

    # -- reports

    def _report(self, study: StudyRecord) -> ReportRecord:
        procedure = next(
            (p for group in PROCEDURES.values() for p in group if p.code == study.procedure), COMBINED_CT
        )
        text = self.rng.choice(procedure.reports)
        final = study.publication == "A"
        # A: validated the next morning; B: the manifest is out at acquisition, the report is a draft
        issued_date, issued_time = (
            _later(study.date, "083000", minutes=24 * 60 + self.rng.randrange(180))
            if final
            else _later(study.date, study.time, minutes=40 + self.rng.randrange(60))
        )
        digest = hashlib.sha256(study.study_instance_uid.encode()).hexdigest()[:20]
        return ReportRecord(
            id=f"rpt-{self.country.code.lower()}-{digest}",
            study=study,
            status="final" if final else "preliminary",
            conclusion=text.conclusion,
            findings=text.findings,
            author=people.radiologist(self.rng, self.country.code),
            issued=_iso(issued_date, issued_time),
        )


def _regions(country: Country) -> list[tuple[str, ...]]:
    """Retrieve Location UIDs a study may use: all PACS, or those of one regional registry (arch. B)."""
    if country.architecture != "B":
        return [tuple(p.retrieve_location_uid for p in country.pacs)]
    groups: dict[str | None, list[str]] = {}
    for p in country.pacs:
        groups.setdefault(p.registry, []).append(p.retrieve_location_uid)
    return [tuple(v) for v in groups.values()]


def _later(day: str, time: str, *, minutes: int) -> tuple[str, str]:
    moment = datetime.strptime(day + time[:6], "%Y%m%d%H%M%S") + timedelta(minutes=minutes)
    return moment.strftime("%Y%m%d"), moment.strftime("%H%M%S")


def _iso(day: str, time: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:8]}T{time[:2]}:{time[2:4]}:{time[4:6]}Z"


# --------------------------------------------------------------------------- state file


def catalogue_json(data: CountryData) -> list[dict[str, Any]]:
    """The state file's catalogue entries of one country (docs/state-file.md, contract), plus extras."""
    return [
        {
            "country": patient.country,
            "id": patient.id,
            "issuer": patient.issuer,
            "family": patient.family,
            "given": patient.given,
            "birth_date": patient.birth_date,
            "sex": patient.sex,
            "studies": [_study_json(data, s) for s in data.studies if s.patient == patient],
        }
        for patient in data.patients
    ]


def _study_json(data: CountryData, study: StudyRecord) -> dict[str, Any]:
    report = data.report(study)
    return {
        "study_instance_uid": study.study_instance_uid,
        "accession_number": study.accession_number,
        "modalities": list(study.modalities),
        "anatomical_region": study.anatomical_region.code,
        "manifest_sop_instance_uid": study.manifest_sop_instance_uid,
        "series": [
            {
                "series_instance_uid": s.series_instance_uid,
                "retrieve_location_uid": s.retrieve_location_uid,
                "instances": len(s.instances),
                "modality": s.modality,
                "description": s.description,
                "body_part": s.body_part,
                "retrieve_url": s.retrieve_url,
                "sop_instance_uids": [i.sop_instance_uid for i in s.instances],
            }
            for s in study.series
        ],
        # extras
        "date": study.date,
        "time": study.time,
        "description": study.description,
        "procedure": study.procedure.display,
        "procedure_code": study.procedure.coding(),
        "anatomical_region_display": study.anatomical_region.display,
        "laterality": study.laterality,
        "publication": study.publication,
        "institution": study.institution,
        "accession_numbers": sorted({r.accession_number for r in study.requests}),
        "placer_orders": sorted({r.placer_order_number for r in study.requests}),
        "requests": [
            {
                "accession_number": r.accession_number,
                "accession_issuer": r.accession_issuer,
                "placer_order_number": r.placer_order_number,
                "placer_issuer": r.placer_issuer,
                "procedure": r.procedure.coding(),
            }
            for r in study.requests
        ],
        "manifest_series_instance_uid": study.manifest_series_instance_uid,
        "key_images": [i.sop_instance_uid for i in study.key_images],
        "kin_sop_instance_uid": study.kin_sop_instance_uid,
        "report": None if report is None else {"id": report.id, "status": report.status},
    }
