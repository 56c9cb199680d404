"""QIDO-RS (RAD-129, PS3.18 10.6): matching keys, paging, includefield, result attributes and errors."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pacs_harness import Pacs
from pacs_samples import Sample, sample_study
from pydicom import dcmread
from pydicom.data import get_charset_files, get_testdata_file

from ncp.dicom.uids import deterministic_uid

JSON = "application/dicom+json"


def value(result: dict[str, Any], tag: str) -> Any:
    values = result[tag].get("Value", [])
    return values[0] if len(values) == 1 else values


@pytest.fixture(scope="module")
def catalogue() -> dict[str, list[Sample]]:
    """Three patients' studies with distinct dates, accessions and modalities."""
    mr = {"series": 1, "per_series": 2, "modalities": ("MR",)}
    mixed = {"series": 3, "per_series": 1, "modalities": ("CT", "PT", "SR")}
    return {
        "ct": sample_study("q-ct", patient_id="P-100", accession="A-1", study_date="20240110"),
        "mr": sample_study("q-mr", patient_id="P-200", accession="A-2", study_date="20240315", **mr),
        "mixed": sample_study("q-mix", patient_id="P-100", accession="A-3", study_date="20250601", **mixed),
    }


CHARSETS = ("chrH31.dcm", "chrX1.dcm", "chrI2.dcm")


@pytest.fixture(scope="module")
def qido(shared: Pacs, catalogue: dict[str, list[Sample]]) -> Iterator[Pacs]:
    for samples in catalogue.values():
        shared.load(samples)
    assert shared.stow([Path(get_charset_files(n)[0]).read_bytes() for n in CHARSETS]).status_code == 200
    assert shared.stow([Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()]).status_code == 200
    yield shared


def charset_study(name: str) -> str:
    return str(dcmread(get_charset_files(name)[0]).StudyInstanceUID)


def search(pacs: Pacs, path: str, **params: Any) -> list[dict[str, Any]]:
    response = pacs.get(path, accept=JSON, **params)
    assert response.status_code == 200, response.headers.get("warning")
    assert response.headers["content-type"] == JSON
    result: list[dict[str, Any]] = response.json()
    return result


def study_uids(results: list[dict[str, Any]]) -> set[str]:
    return {value(r, "0020000D") for r in results}


def uid_of(samples: list[Sample]) -> str:
    return samples[0].study


def test_studies_by_patient_id(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    assert study_uids(search(qido, "/studies", PatientID="P-100")) == {
        uid_of(catalogue["ct"]),
        uid_of(catalogue["mixed"]),
    }


def test_keys_may_be_given_as_tags(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    assert study_uids(search(qido, "/studies", **{"00100020": "P-200"})) == {uid_of(catalogue["mr"])}


def test_studies_by_accession_number_and_uid_list(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    by_accession = search(qido, "/studies", AccessionNumber="A-3")
    uid_list = ",".join([uid_of(catalogue["ct"]), uid_of(catalogue["mr"])])
    by_uids = search(qido, "/studies", StudyInstanceUID=uid_list)

    assert study_uids(by_accession) == {uid_of(catalogue["mixed"])}
    assert study_uids(by_uids) == {uid_of(catalogue["ct"]), uid_of(catalogue["mr"])}


@pytest.mark.parametrize(
    ("dates", "expected"),
    [
        ("20240315", {"mr"}),
        ("20240101-20241231", {"ct", "mr"}),
        ("-20240201", {"ct"}),
        ("20240316-", {"mixed"}),
        ("20200101-20201231", set()),
    ],
)
def test_study_date_single_and_ranges(
    qido: Pacs, catalogue: dict[str, list[Sample]], dates: str, expected: set[str]
) -> None:
    found = study_uids(search(qido, "/studies", StudyDate=dates)) & {uid_of(s) for s in catalogue.values()}

    assert found == {uid_of(catalogue[k]) for k in expected}


def test_wildcards_on_text_keys(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    assert study_uids(search(qido, "/studies", PatientID="P-?00", AccessionNumber="A-*")) == {
        uid_of(s) for s in catalogue.values()
    }


@pytest.mark.parametrize("key", ["ModalitiesInStudy", "Modality"])
def test_studies_by_modality_in_study(qido: Pacs, catalogue: dict[str, list[Sample]], key: str) -> None:
    assert study_uids(search(qido, "/studies", **{key: "PT"})) == {uid_of(catalogue["mixed"])}
    assert study_uids(search(qido, "/studies", **{key: "MR,PT"})) == {
        uid_of(catalogue["mixed"]),
        uid_of(catalogue["mr"]),
    }


def test_study_results_carry_counts_modalities_and_a_working_retrieve_url(
    qido: Pacs, catalogue: dict[str, list[Sample]]
) -> None:
    (result,) = search(qido, "/studies", StudyInstanceUID=uid_of(catalogue["mixed"]))

    assert value(result, "00201206") == 3
    assert value(result, "00201208") == 3
    assert sorted(result["00080061"]["Value"]) == ["CT", "PT", "SR"]
    assert value(result, "00100020") == "P-100"
    assert value(result, "00100010") == {"Alphabetic": "Doe^Jane"}
    assert value(result, "00080020") == "20250601"
    assert value(result, "00080050") == "A-3"
    url = value(result, "00081190")
    assert url == f"{qido.base}/studies/{uid_of(catalogue['mixed'])}"
    assert (
        qido.http.get(url, headers={"Accept": "multipart/related; type=application/dicom"}).status_code == 200
    )
    assert list(result) == sorted(result)  # DICOM JSON attributes in tag order


def test_series_of_a_study_and_by_modality(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    mixed = catalogue["mixed"]
    series = search(qido, f"/studies/{uid_of(mixed)}/series")
    pt = search(qido, f"/studies/{uid_of(mixed)}/series", Modality="PT")

    assert {value(r, "0020000E") for r in series} == {s.series for s in mixed}
    assert [value(r, "00080060") for r in series] == ["CT", "PT", "SR"]  # by Series Number
    assert [value(r, "00200011") for r in series] == [1, 2, 3]
    assert all(value(r, "00201209") == 1 for r in series)
    (only,) = pt
    assert value(only, "00081190") == f"{qido.base}/studies/{uid_of(mixed)}/series/{value(only, '0020000E')}"


def test_all_series_search_includes_study_attributes(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    results = search(qido, "/series", Modality="MR")

    (result,) = [r for r in results if value(r, "0020000D") == uid_of(catalogue["mr"])]
    assert value(result, "00100020") == "P-200"


def test_instances_at_every_scope(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    ct = catalogue["ct"]
    first = ct[0]
    in_series = search(qido, f"/studies/{first.study}/series/{first.series}/instances")
    in_study = search(qido, f"/studies/{first.study}/instances")
    by_sop = search(qido, "/instances", SOPInstanceUID=first.sop)

    assert [value(r, "00080018") for r in in_series] == [s.sop for s in ct if s.series == first.series]
    assert {value(r, "00080018") for r in in_study} == {s.sop for s in ct}
    (one,) = by_sop
    assert value(one, "00080016") == "1.2.840.10008.5.1.4.1.1.2"
    assert value(one, "00280010") == 64
    assert value(one, "00200013") == 1
    assert value(one, "00081190").endswith(
        f"/studies/{first.study}/series/{first.series}/instances/{first.sop}"
    )


def test_paging_with_limit_and_offset(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    everything = [value(r, "00080018") for r in search(qido, "/instances", PatientID="P-100")]
    pages = [
        [value(r, "00080018") for r in search(qido, "/instances", PatientID="P-100", limit=4, offset=offset)]
        for offset in range(0, len(everything) + 4, 4)
    ]

    assert len(everything) == len(catalogue["ct"]) + len(catalogue["mixed"])
    assert [uid for page in pages for uid in page] == everything
    assert all(len(p) <= 4 for p in pages) and pages[-1] == []


def test_a_server_page_cap_is_announced_with_a_warning(start_pacs: Callable[..., Pacs]) -> None:
    pacs = start_pacs(max_results=2)
    pacs.load(sample_study("cap", series=1, per_series=5))

    response = pacs.get("/instances", accept=JSON)
    under_cap = pacs.get("/instances", accept=JSON, limit=2)

    assert response.status_code == 200 and len(response.json()) == 2
    assert "additional results" in response.headers["warning"]
    assert "warning" not in under_cap.headers


def test_includefield_adds_named_attributes(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    first = catalogue["ct"][0]
    (result,) = search(qido, "/instances", SOPInstanceUID=first.sop, includefield=["ImageType", "00281050"])
    (study,) = search(
        qido, "/studies", StudyInstanceUID=first.study, includefield="PatientBirthDate,OperatorsName"
    )

    assert result["00080008"]["Value"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert value(result, "00281050") == 40
    assert value(study, "00100030") == "19700101"
    assert study["00081070"] == {"vr": "PN"}  # asked for, not present: empty


def test_includefield_all_adds_level_attributes_only(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    first = catalogue["ct"][0]
    (study,) = search(qido, "/studies", StudyInstanceUID=first.study, includefield="all")
    (instance,) = search(qido, "/instances", SOPInstanceUID=first.sop, includefield="all")

    assert value(study, "00100030") == "19700101"
    assert "00080018" not in study and "00280010" not in study
    assert value(instance, "00281052") == -1024 and "7FE00010" not in instance


def test_no_match_is_200_with_an_empty_array(qido: Pacs) -> None:
    assert search(qido, "/studies", PatientID="NOBODY") == []
    assert search(qido, f"/studies/{deterministic_uid('none')}/series") == []


def test_an_empty_value_matches_everything(qido: Pacs, catalogue: dict[str, list[Sample]]) -> None:
    assert study_uids(search(qido, "/studies", PatientID="")) >= {uid_of(s) for s in catalogue.values()}


def test_fuzzy_matching_is_declined_with_a_warning(qido: Pacs) -> None:
    response = qido.get("/studies", accept=JSON, PatientID="P-100", fuzzymatching="true")

    assert response.status_code == 200
    assert "fuzzymatching is not supported" in response.headers["warning"]


@pytest.mark.parametrize(
    ("path", "params", "needle"),
    [
        ("/studies", {"PatientsShoeSize": "42"}, "PatientsShoeSize"),
        ("/studies", {"00091001": "x"}, "private"),
        ("/instances", {"00191010": "x"}, "Private Creator"),
        ("/studies", {"ReferencedSeriesSequence": "x"}, "sequence"),
        ("/instances", {"PixelData": "x"}, "binary"),
        ("/instances", {"Rows": "many"}, "number"),
        ("/studies", {"StudyTime": "10:15"}, "TM"),
        ("/studies", {"SOPInstanceUID": "1.2.x"}, "SOPInstanceUID"),
        ("/studies", {"StudyDate": "2024-01-01"}, "StudyDate"),
        ("/studies", {"StudyDate": "20241301"}, "calendar"),
        ("/studies", {"StudyInstanceUID": "1.2.x"}, "StudyInstanceUID"),
        ("/studies", {"limit": "-1"}, "limit"),
        ("/studies", {"offset": "ten"}, "offset"),
        ("/studies", {"offset": "9" * 30}, "offset"),
        ("/studies", {"limit": "²"}, "limit"),
        ("/studies", {"includefield": "NoSuchKeyword"}, "includefield"),
        ("/studies", {"fuzzymatching": "maybe"}, "fuzzymatching"),
        ("/studies/1.2.x/series", {}, "StudyInstanceUID"),
    ],
)
def test_bad_queries_are_400_with_a_warning(
    qido: Pacs, path: str, params: dict[str, str], needle: str
) -> None:
    response = qido.get(path, accept=JSON, **params)

    assert response.status_code == 400
    assert response.headers["warning"].startswith("299 pacs ")
    assert needle in response.headers["warning"]


def test_search_results_in_xml_are_not_acceptable(qido: Pacs) -> None:
    response = qido.get("/studies", accept='multipart/related; type="application/dicom+xml"')

    assert response.status_code == 406


def test_withheld_instances_are_not_counted(start_pacs: Callable[..., Pacs]) -> None:
    samples = sample_study("withheld-qido", series=2, per_series=2)
    pacs = start_pacs(withhold=frozenset({samples[0].sop}))
    pacs.load(samples)

    (study,) = search(pacs, "/studies")
    instances = search(pacs, "/instances")

    assert value(study, "00201208") == 3
    assert samples[0].sop not in {value(r, "00080018") for r in instances}


def test_default_accept_is_dicom_json(qido: Pacs) -> None:
    response = qido.http.get(qido.base + "/studies", params={"PatientID": "P-200"})

    assert response.status_code == 200
    assert response.headers["content-type"] == JSON
    assert isinstance(response.json(), list)


# -- person names, required attributes, matching on any attribute -------------------------------------
@pytest.mark.parametrize(
    ("name", "groups"),
    [
        (
            "chrH31.dcm",
            {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"},
        ),
        ("chrX1.dcm", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
        ("chrI2.dcm", {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"}),
    ],
)
def test_person_names_keep_their_component_groups(qido: Pacs, name: str, groups: dict[str, str]) -> None:
    (study,) = search(qido, "/studies", StudyInstanceUID=charset_study(name))
    (series,) = search(qido, "/series", StudyInstanceUID=charset_study(name))

    assert study["00100010"] == {"vr": "PN", "Value": [groups]}
    assert series["00100010"] == {"vr": "PN", "Value": [groups]}


@pytest.mark.parametrize("patient_name", ["Yamada^Tarou", "山田^太郎", "やまだ^たろう", "Yamada*", "山田*"])
def test_person_names_match_on_any_component_group(qido: Pacs, patient_name: str) -> None:
    assert study_uids(search(qido, "/studies", PatientName=patient_name)) == {charset_study("chrH31.dcm")}


def test_instance_results_carry_the_attributes_ps3_18_requires(
    qido: Pacs, catalogue: dict[str, list[Sample]]
) -> None:
    first = catalogue["ct"][0]

    (result,) = search(
        qido, f"/studies/{first.study}/series/{first.series}/instances", SOPInstanceUID=first.sop
    )

    # PS3.18 Table 10.6.3-5 (and the series attributes of Table 10.6.3-4)
    assert value(result, "00080016") == "1.2.840.10008.5.1.4.1.1.2"
    assert value(result, "00080018") == first.sop
    assert value(result, "00080056") == "ONLINE"
    assert value(result, "00200013") == 1
    assert (value(result, "00280010"), value(result, "00280011"), value(result, "00280100")) == (64, 64, 16)
    assert result["00280008"] == {"vr": "IS"}  # single-frame: present, empty
    assert value(result, "00081190").endswith(f"/instances/{first.sop}")
    assert (value(result, "00080060"), value(result, "0020000E"), value(result, "00200011")) == (
        "CT",
        first.series,
        1,
    )


def test_study_and_series_results_carry_the_attributes_ps3_18_requires(
    qido: Pacs, catalogue: dict[str, list[Sample]]
) -> None:
    ct = catalogue["ct"]

    (study,) = search(qido, "/studies", StudyInstanceUID=ct[0].study)
    (series,) = search(qido, f"/studies/{ct[0].study}/series", SeriesInstanceUID=ct[0].series)

    study_tags = {"00080020", "00080030", "00080050", "00080056", "00080061", "00080090", "00081190"}
    study_tags |= {
        "00100010",
        "00100020",
        "00100030",
        "00100040",
        "0020000D",
        "00200010",
        "00201206",
        "00201208",
    }
    assert study_tags <= set(study)  # Table 10.6.3-3
    assert {"00080060", "0020000E", "00200011", "00201209", "00081190"} <= set(series)  # Table 10.6.3-4
    assert value(study, "00080090") == {"Alphabetic": "Who^Doctor"}


def test_matching_on_rows_a_numeric_attribute_of_the_instance(
    qido: Pacs, catalogue: dict[str, list[Sample]]
) -> None:
    ct = catalogue["ct"]

    matching = search(qido, f"/studies/{ct[0].study}/instances", Rows="64")
    none = search(qido, f"/studies/{ct[0].study}/instances", Rows="512")
    listed = search(qido, f"/studies/{ct[0].study}/instances", Rows="512,64")

    assert {value(r, "00080018") for r in matching} == {s.sop for s in ct}
    assert none == []
    assert len(listed) == len(ct)


def test_a_lower_level_key_matches_the_studies_and_series_that_hold_it(
    qido: Pacs, catalogue: dict[str, list[Sample]]
) -> None:
    mixed = catalogue["mixed"]
    ours = {uid_of(s) for s in catalogue.values()}

    studies = study_uids(search(qido, "/studies", Rows="64")) & ours
    by_sop = search(qido, "/studies", SOPInstanceUID=mixed[1].sop)
    series = search(qido, f"/studies/{mixed[0].study}/series", SOPInstanceUID=mixed[1].sop)

    assert studies == ours and study_uids(search(qido, "/studies", Rows="512")) & ours == set()
    (study,) = by_sop
    assert value(study, "0020000D") == mixed[0].study
    assert value(study, "00201208") == len(mixed)  # counts are of the whole study, not the matches
    assert [value(r, "0020000E") for r in series] == [mixed[1].series]


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ImageType": "AXIAL"}, 6),  # any value of a multi-valued attribute
        ({"ImageType": "SECONDARY"}, 0),
        ({"StudyTime": "100000-110000"}, 6),  # TM range
        ({"StudyTime": "-090000"}, 0),
        ({"SeriesDescription": "CT series ?"}, 6),  # wildcard
        ({"WindowCenter": "40"}, 6),  # DS as a number
        ({"WindowCenter": "40.0", "BodyPartExamined": "CHEST"}, 6),
        ({"BodyPartExamined": "HEAD"}, 0),
        ({"PatientSex": "F"}, 6),
    ],
)
def test_matching_on_stored_attributes_by_vr(
    qido: Pacs, catalogue: dict[str, list[Sample]], params: dict[str, str], expected: int
) -> None:
    ct = catalogue["ct"]

    assert len(search(qido, f"/studies/{ct[0].study}/instances", **params)) == expected


def test_includefield_may_name_an_instance_attribute_at_the_study_level(
    qido: Pacs, catalogue: dict[str, list[Sample]]
) -> None:
    (study,) = search(
        qido, "/studies", StudyInstanceUID=uid_of(catalogue["ct"]), includefield="Rows,00280100"
    )

    assert (value(study, "00280010"), value(study, "00280100")) == (64, 16)


def test_includefield_may_name_a_private_tag_that_matching_may_not(qido: Pacs) -> None:
    ct = dcmread(get_testdata_file("CT_small.dcm"))

    (result,) = search(qido, "/instances", SOPInstanceUID=ct.SOPInstanceUID, includefield="00091001")
    refused = qido.get("/instances", accept=JSON, **{"00091001": ct[0x00091001].value})

    assert result["00091001"]["Value"] == [ct[0x00091001].value]  # as the instance holds it
    assert refused.status_code == 400 and "Private Creator" in refused.headers["warning"]
