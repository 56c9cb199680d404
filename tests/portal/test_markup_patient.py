"""The catalogue's patient whose name and study description are markup and script: still valid DICOM
(dciodvfy on its instances, its manifest in both encodings and its KIN), the markup intact in every object."""

from __future__ import annotations

import io

import pydicom
import pytest

from ncp.dicom.dciodvfy import dciodvfy_available, run_dciodvfy
from ncp.dicom.kos import build_kin, build_manifest, read_manifest
from ncp.model import StudyRecord
from ncp.synth import CountryData, synthesize, to_part10
from ncp.synth.catalogue import MARKUP_DESCRIPTION, MARKUP_FAMILY, MARKUP_GIVEN
from ncp.topology import builtin_topology

needs_dciodvfy = pytest.mark.skipif(not dciodvfy_available(), reason="dciodvfy (dicom3tools) not installed")


@pytest.fixture(scope="module")
def fr() -> CountryData:
    topology = builtin_topology("default")
    urls = {p.retrieve_location_uid: "http://pacs.invalid/dicom-web/" for p in topology.country("FR").pacs}
    return synthesize(topology, "FR", retrieve_urls=urls)


@pytest.fixture(scope="module")
def markup(fr: CountryData) -> StudyRecord:
    return next(s for s in fr.studies if s.patient.family == MARKUP_FAMILY)


def test_only_the_first_country_has_it_and_the_others_are_unchanged(fr: CountryData) -> None:
    topology = builtin_topology("default")
    urls = {p.retrieve_location_uid: "http://pacs.invalid/dicom-web/" for p in topology.country("AT").pacs}
    at = synthesize(topology, "AT", retrieve_urls=urls)
    assert [p.family for p in fr.patients].count(MARKUP_FAMILY) == 1 and fr.patients[
        -1
    ].family == MARKUP_FAMILY
    assert MARKUP_FAMILY not in {p.family for p in at.patients}
    assert len(fr.patients) == topology.synth.patients_per_country + 1


@needs_dciodvfy
def test_its_instances_manifests_and_kin_pass_dciodvfy(fr: CountryData, markup: StudyRecord) -> None:
    for ds in fr.instances(markup):
        assert run_dciodvfy(to_part10(ds)).errors == [], ds.SOPInstanceUID
    for encoding in ("MADO", "MCWG"):
        kos = to_part10(build_manifest(markup, encoding=encoding))
        assert run_dciodvfy(kos).errors_beyond_cp2595 == [], encoding
    if markup.kin_sop_instance_uid:
        assert run_dciodvfy(to_part10(build_kin(markup))).errors == []


def test_the_markup_is_kept_verbatim(fr: CountryData, markup: StudyRecord) -> None:
    ds = next(fr.instances(markup))
    assert str(ds.PatientName) == f"{MARKUP_FAMILY}^{MARKUP_GIVEN}"
    assert ds.StudyDescription == MARKUP_DESCRIPTION
    kos = pydicom.dcmread(io.BytesIO(to_part10(build_manifest(markup, encoding="MADO"))))
    assert str(kos.PatientName) == f"{MARKUP_FAMILY}^{MARKUP_GIVEN}"
    assert read_manifest(kos).patient_id == markup.patient.id
