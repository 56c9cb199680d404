"""The synthetic catalogue: deterministic from the seed, realistic, with the MCWG m-n links."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from synth_helpers import pacs_urls, synth

from ncp.codes import ANATOMICAL_REGIONS, SCT
from ncp.dicom.uids import is_valid_uid
from ncp.errors import InvalidTopology
from ncp.synth import CountryData, catalogue_json, synthesize, to_part10
from ncp.synth.procedures import BODY_PART_REGION
from ncp.topology import Topology


def test_same_seed_gives_identical_records(default_topology: Topology, fr: CountryData) -> None:
    again = synth(default_topology, "FR")
    assert again == fr
    assert again.series_specs == fr.series_specs


def test_same_seed_gives_identical_instance_bytes(default_topology: Topology, fr: CountryData) -> None:
    again = synth(default_topology, "FR")
    study = fr.studies[0]
    first = [to_part10(ds) for ds in fr.instances(study)]
    second = [to_part10(ds) for ds in again.instances(again.studies[0])]
    assert first == second
    assert len(first) == sum(len(s.instances) for s in study.series)


def test_different_seed_or_country_gives_different_catalogue(
    default_topology: Topology, fr: CountryData
) -> None:
    other = synth(default_topology, "FR", seed=default_topology.synth.seed + 1)
    uids = {s.study_instance_uid for s in fr.studies}
    assert not uids & {s.study_instance_uid for s in other.studies}
    assert [p.id for p in other.patients] != [p.id for p in fr.patients]
    at = synth(default_topology, "AT")
    assert not uids & {s.study_instance_uid for s in at.studies}


def test_instance_size_does_not_change_the_records(default_topology: Topology, fr: CountryData) -> None:
    assert synth(default_topology, "FR", instance_kb=512).studies == fr.studies


def test_counts_follow_the_topology_options(default_topology: Topology) -> None:
    data = synth(default_topology, "AT", patients_per_country=4, studies_per_patient=3)
    assert len(data.patients) == 4
    assert len(data.studies) == 12
    assert Counter(s.patient for s in data.studies) == {p: 3 for p in data.patients}
    assert len(data.reports) == 12


def test_every_uid_is_valid_and_2_25_rooted(every_country: list[CountryData]) -> None:
    for data in every_country:
        for study in data.studies:
            uids = [study.study_instance_uid, study.manifest_sop_instance_uid]
            uids += [study.manifest_series_instance_uid]
            uids += [u for u in (study.kin_sop_instance_uid, study.kin_series_instance_uid) if u]
            for series in study.series:
                uids += [series.series_instance_uid, *(i.sop_instance_uid for i in series.instances)]
            assert all(is_valid_uid(u) and u.startswith("2.25.") for u in uids)
        everything = [
            u
            for s in data.studies
            for u in (s.study_instance_uid, *(x.series_instance_uid for x in s.series))
        ]
        assert len(everything) == len(set(everything))


def test_patients_have_national_ids_of_their_issuer(every_country: list[CountryData]) -> None:
    for data in every_country:
        assert len({p.id for p in data.patients}) == len(data.patients)
        for p in data.patients:
            assert p.country == data.country
            assert p.issuer in {"2.999.250.2", "2.999.40.2", "2.999.578.2"}
            assert p.family and p.given and len(p.birth_date) == 8 and p.sex in ("M", "F")


def test_french_ids_are_nir_with_a_valid_key(fr: CountryData) -> None:
    for p in fr.patients:
        assert len(p.id) == 15 and p.id.isdigit()
        assert p.id[0] == ("1" if p.sex == "M" else "2")
        assert p.id[1:5] == p.birth_date[2:6]  # YY MM
        assert int(p.id[13:]) == 97 - int(p.id[:13]) % 97


def test_austrian_ids_are_svnr_with_a_valid_check_digit(every_country: list[CountryData]) -> None:
    for p in (p for d in every_country if d.country == "AT" for p in d.patients):
        digits = [int(c) for c in p.id]
        weights = (3, 7, 9, 0, 5, 8, 4, 2, 1, 6)
        assert len(p.id) == 10
        assert sum(w * d for w, d in zip(weights, digits, strict=True)) % 11 == digits[3]
        assert p.id[4:] == p.birth_date[6:8] + p.birth_date[4:6] + p.birth_date[2:4]


def test_norwegian_ids_are_synthetic_fodselsnummer(every_country: list[CountryData]) -> None:
    for p in (p for d in every_country if d.country == "NO" for p in d.patients):
        d = [int(c) for c in p.id]
        assert len(p.id) == 11
        assert int(p.id[2:4]) == int(p.birth_date[4:6]) + 80  # synthetic-person month
        k1 = (11 - sum(w * x for w, x in zip((3, 7, 6, 1, 8, 9, 4, 5, 2), d[:9], strict=True)) % 11) % 11
        k2 = (11 - sum(w * x for w, x in zip((5, 4, 3, 2, 7, 6, 5, 4, 3, 2), d[:10], strict=True)) % 11) % 11
        assert (k1, k2) == (d[9], d[10])
        assert d[8] % 2 == (1 if p.sex == "M" else 0)


def test_modalities_cycle_with_realistic_series(every_country: list[CountryData]) -> None:
    expected_series = {"CT": {2}, "MR": {3}, "CR": {1, 2}, "US": {1}, "MG": {4}}
    for data in every_country:
        for g, study in enumerate(data.studies):
            modality = ("CT", "MR", "CR", "US", "MG")[g % 5]
            assert study.modalities == (modality,)
            assert len(study.series) in expected_series[modality]
            assert all(s.modality == modality and s.description for s in study.series)
            counts = [len(s.instances) for s in study.series]
            assert all(1 <= n <= 6 for n in counts)
            if modality in ("CT", "MR", "US"):
                assert all(n >= 3 for n in counts)


def test_ct_has_thin_and_thick_reconstructions(fr: CountryData) -> None:
    ct = [s for s in fr.studies if s.modalities == ("CT",)]
    assert ct
    for study in ct:
        thicknesses = [fr.series_specs[s.series_instance_uid].thickness for s in study.series]
        assert min(thicknesses) < 2 < max(thicknesses)


def test_body_part_lies_in_the_mcwg_region(every_country: list[CountryData]) -> None:
    for data in every_country:
        for study in data.studies:
            assert study.anatomical_region.system == SCT
            assert study.anatomical_region.code in ANATOMICAL_REGIONS
            assert {BODY_PART_REGION[s.body_part] for s in study.series} == {study.anatomical_region.code}


def test_procedures_are_coded_and_some_carry_laterality(every_country: list[CountryData]) -> None:
    studies = [s for d in every_country for s in d.studies]
    assert all(s.procedure.code and s.procedure.display for s in studies)
    assert all(s.laterality in (None, "L", "R", "B") for s in studies)
    assert {s.laterality for s in studies} - {None}
    mammo = [s for s in studies if s.modalities == ("MG",)]
    assert mammo and all(s.laterality in ("L", "B") and s.patient.sex == "F" for s in mammo)


def test_accession_and_order_issuers_come_from_the_country(
    every_country: list[CountryData], default_topology: Topology, three_topology: Topology
) -> None:
    for data in every_country:
        country = {**three_topology.countries, **default_topology.countries}[data.country]
        for r in (r for s in data.studies for r in s.requests):
            assert (r.accession_issuer, r.placer_issuer) == (country.accession_issuer, country.order_issuer)
            assert len(r.accession_number) <= 16  # SH


def _links(data: CountryData) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    accessions_of_order: dict[str, set[str]] = {}
    studies_of_accession: dict[str, set[str]] = {}
    for s in data.studies:
        for r in s.requests:
            accessions_of_order.setdefault(r.placer_order_number, set()).add(r.accession_number)
            studies_of_accession.setdefault(r.accession_number, set()).add(s.study_instance_uid)
    return accessions_of_order, studies_of_accession


def test_m_n_links_are_present_in_every_shipped_country(every_country: list[CountryData]) -> None:
    """MADO 6.X.2.8.1: 1 order -> 2 accessions; 1 accession -> 2 studies; 1 study <- 2 orders, 1 accession."""
    for data in every_country:
        accessions_of_order, studies_of_accession = _links(data)
        assert any(len(a) == 2 for a in accessions_of_order.values()), data.country
        assert any(len(s) == 2 for s in studies_of_accession.values()), data.country
        two_orders = [s for s in data.studies if len({r.placer_order_number for r in s.requests}) == 2]
        assert len(two_orders) == 1, data.country
        assert two_orders[0].accession_number  # one accession for both orders
        assert len({r.procedure for r in two_orders[0].requests}) == 2


def test_linked_studies_belong_to_one_patient(every_country: list[CountryData]) -> None:
    for data in every_country:
        patient_of = {s.study_instance_uid: s.patient for s in data.studies}
        accessions_of_order, studies_of_accession = _links(data)
        for studies in studies_of_accession.values():
            assert len({patient_of[u] for u in studies}) == 1
        for order, accessions in accessions_of_order.items():
            owners = {s.patient for s in data.studies for r in s.requests if r.placer_order_number == order}
            assert len(owners) == 1 and accessions


def test_a_single_study_country_still_works(default_topology: Topology) -> None:
    data = synth(default_topology, "AT", patients_per_country=1, studies_per_patient=1)
    (study,) = data.studies
    assert study.accession_number and len(study.requests) == 2  # the two-orders case fits in one study


def test_about_half_the_studies_have_one_or_two_key_images(every_country: list[CountryData]) -> None:
    studies = [s for d in every_country for s in d.studies]
    with_keys = [s for s in studies if s.key_images]
    assert 0.3 <= len(with_keys) / len(studies) <= 0.7
    for s in studies:
        assert 0 <= len(s.key_images) <= 2
        assert bool(s.kin_sop_instance_uid) == bool(s.key_images) == bool(s.kin_series_instance_uid)


def test_both_publication_variants_with_matching_report_status(every_country: list[CountryData]) -> None:
    for data in every_country:
        assert {s.publication for s in data.studies} == {"A", "B"}
        for study in data.studies:
            report = data.report(study)
            assert report is not None and report.study == study
            assert report.status == ("final" if study.publication == "A" else "preliminary")
            assert report.findings and report.conclusion and report.author.startswith("Dr ")
        assert len({r.id for r in data.reports}) == len(data.reports)


def test_default_topology_has_a_study_spread_over_two_pacs(
    fr: CountryData, default_topology: Topology
) -> None:
    spread = [s for s in fr.studies if len({x.retrieve_location_uid for x in s.series}) == 2]
    assert spread
    urls = pacs_urls(default_topology, "FR")
    for s in (x for study in fr.studies for x in study.series):
        assert s.retrieve_url == urls[s.retrieve_location_uid]
    assert {x.retrieve_location_uid for s in fr.studies for x in s.series} == set(urls)


def test_architecture_b_keeps_each_study_in_one_region(three_topology: Topology) -> None:
    norway = three_topology.country("NO")
    region_of = {p.retrieve_location_uid: p.registry for p in norway.pacs}
    data = synth(three_topology, "NO")
    assert {region_of[s.series[0].retrieve_location_uid] for s in data.studies} == {"north", "south"}
    for study in data.studies:
        assert len({region_of[s.retrieve_location_uid] for s in study.series}) == 1


def test_single_pacs_country_puts_everything_there(default_topology: Topology) -> None:
    data = synth(default_topology, "AT")
    (vna,) = default_topology.country("AT").pacs
    assert {s.retrieve_location_uid for st in data.studies for s in st.series} == {vna.retrieve_location_uid}


def test_institution_and_dates_are_plausible(every_country: list[CountryData]) -> None:
    for data in every_country:
        for s in data.studies:
            assert s.institution
            assert "20250101" <= s.date <= "20261128" and s.date > s.patient.birth_date
            assert all(x.date + x.time >= s.date + s.time for x in s.series)


def test_a_missing_retrieve_url_is_a_topology_error(default_topology: Topology) -> None:
    urls = pacs_urls(default_topology, "FR")
    urls.pop(next(iter(urls)))
    with pytest.raises(InvalidTopology, match="Retrieve Location UID"):
        synthesize(default_topology, "FR", retrieve_urls=urls)


def test_unknown_country_is_a_topology_error(default_topology: Topology) -> None:
    with pytest.raises(InvalidTopology, match="unknown country"):
        synthesize(default_topology, "ZZ", retrieve_urls={})


def test_catalogue_json_has_the_state_file_contract(fr: CountryData) -> None:
    entries = json.loads(json.dumps(catalogue_json(fr)))  # JSON-serialisable as is
    assert [(e["country"], e["id"], e["issuer"]) for e in entries] == [
        (p.country, p.id, p.issuer) for p in fr.patients
    ]
    studies = [s for e in entries for s in e["studies"]]
    assert [s["study_instance_uid"] for s in studies] == [
        s.study_instance_uid for p in fr.patients for s in fr.studies if s.patient == p
    ]
    by_uid = {s.study_instance_uid: s for s in fr.studies}
    for entry in studies:
        record = by_uid[entry["study_instance_uid"]]
        assert entry["accession_number"] == record.accession_number
        assert entry["modalities"] == list(record.modalities)
        assert entry["anatomical_region"] == record.anatomical_region.code
        assert entry["manifest_sop_instance_uid"] == record.manifest_sop_instance_uid
        assert [
            (x["series_instance_uid"], x["retrieve_location_uid"], x["instances"]) for x in entry["series"]
        ] == [(x.series_instance_uid, x.retrieve_location_uid, len(x.instances)) for x in record.series]
        assert entry["key_images"] == [i.sop_instance_uid for i in record.key_images]
        assert entry["publication"] == record.publication
        assert entry["procedure"] == record.procedure.display
        assert set(entry["placer_orders"]) == {r.placer_order_number for r in record.requests}
