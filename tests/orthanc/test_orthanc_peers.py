"""Real peers nobody here wrote: Debian's Orthanc as a national PACS and as the requester-side PACS,
and the ImagingDataCommons dicomweb-client retrieving through the Initiating Imaging Gateway."""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from dicomweb_client.api import DICOMwebClient

from ncp.consumer.client import ImagingConsumer
from ncp.dicom.kos import to_part10
from ncp.federation import Federation
from ncp.orthanc import DICOMWEB_PLUGIN, ORTHANC, OrthancConfig, orthanc_available, run_orthanc
from ncp.publish import Published, seed_federation
from ncp.server import free_port

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module", autouse=True)
def orthanc_is_installed() -> None:
    """`make test` installs Debian's orthanc and orthanc-dicomweb. Without them every test here fails,
    naming what is missing: a peer that is not there must never count as a pass (nor as an expected
    failure). Leaving them out is a choice made on the command line: ``-m 'not orthanc'``."""
    if not orthanc_available():
        pytest.fail(
            f"Orthanc is not installed (need {ORTHANC} and {DICOMWEB_PLUGIN}): run `make system-deps` "
            "(apt-get install orthanc orthanc-dicomweb), or deselect these tests with -m 'not orthanc'",
            pytrace=False,
        )


TOPOLOGY = """
name = "orthanc"
security = false
[synth]
patients_per_country = 2
studies_per_patient = 2
instance_kb = 8
[countries.FR]
home_community_id = "2.999.250.1"
patient_id_issuer = "2.999.250.2"
registries = [{ id = "national" }]
[[countries.FR.pacs]]
id = "orthanc"
retrieve_location_uid = "2.25.249112837101579105183278066551769719101"
backend = "orthanc"
[countries.AT]
home_community_id = "2.999.40.1"
patient_id_issuer = "2.999.40.2"
architecture = "C"
registries = [{ id = "national" }]
pacs = [{ id = "vna", retrieve_location_uid = "2.25.124730087464102372658485198995786580382" }]
"""


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Federation, Published]]:
    run = tmp_path_factory.mktemp("orthanc")
    topology = run / "topology.toml"
    topology.write_text(TOPOLOGY)
    with Federation(str(topology), run / "run", mode="thread") as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        yield fed, published["FR"]


def _expected(pub: Published, study_index: int = 0) -> dict[str, str]:
    study = pub.data.studies[study_index]
    return {
        str(ds.SOPInstanceUID): hashlib.sha256(to_part10(ds)).hexdigest() for ds in pub.data.instances(study)
    }


def test_three_steps_retrieve_from_orthanc_byte_identical(federation: tuple[Federation, Published]) -> None:
    fed, pub = federation
    study = pub.data.studies[0]
    consumer = ImagingConsumer(fed.plan.endpoints["AT"].gateway)
    entry = consumer.find(
        study.patient.issuer, study.patient.id, study_uid=study.study_instance_uid, kind="manifest"
    )[0]
    retrieval = consumer.retrieve_images(
        fed.topology.country("FR").home_community_id, consumer.retrieve_manifest(entry)
    )
    assert retrieval.complete, [s.error for s in retrieval.series]
    expected = _expected(pub)
    assert {k: retrieval.hashes()[k] for k in expected} == expected


def test_no_internal_orthanc_address_reaches_country_b(federation: tuple[Federation, Published]) -> None:
    fed, pub = federation
    study = pub.data.studies[0]
    orthanc = next(iter(fed.plan.endpoints["FR"].pacs.values()))
    internal = orthanc.split("//")[1].split("/")[0]
    series = study.series[0]
    url = (
        f"{fed.plan.endpoints['AT'].gateway}/wado/homeCommunityId/2.999.250.1/RetrieveLocationUID/"
        f"{series.retrieve_location_uid}/studies/{study.study_instance_uid}/series/{series.series_instance_uid}"
    )
    r = httpx.get(url, headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert r.status_code == 200
    assert internal not in str(r.headers)
    head_blocks = [block.split(b"\r\n\r\n", 1)[0] for block in r.content.split(b"\r\n--")]
    assert not any(internal.encode() in block for block in head_blocks)


def test_orthancs_metadata_names_the_consumers_gateway_not_orthanc(
    federation: tuple[Federation, Published],
) -> None:
    """Orthanc writes its configured host into the metadata's URLs (BulkDataURI); the responding gateway
    rebases them on the consumer's gateway."""
    fed, pub = federation
    study = pub.data.studies[0]
    series = study.series[0]
    orthanc = next(iter(fed.plan.endpoints["FR"].pacs.values()))
    series_url = (
        f"{fed.plan.endpoints['AT'].gateway}/wado/homeCommunityId/2.999.250.1/RetrieveLocationUID/"
        f"{series.retrieve_location_uid}/studies/{study.study_instance_uid}/series/{series.series_instance_uid}"
    )
    r = httpx.get(f"{series_url}/metadata", headers={"Accept": "application/dicom+json"})
    assert r.status_code == 200
    assert int(r.headers["content-length"]) == len(r.content)
    assert len(r.json()) == len(series.instances)
    assert orthanc.split("//")[1].split("/")[0] not in r.text
    urls = re.findall(r'"(https?://[^"]+)"', r.text)
    assert urls and all(u.startswith(f"{series_url}/instances/") for u in urls)


def test_dicomweb_client_retrieves_series_and_instance_through_the_gateway(
    federation: tuple[Federation, Published],
) -> None:
    fed, pub = federation
    study = pub.data.studies[0]
    series = study.series[0]
    base = (
        f"{fed.plan.endpoints['AT'].gateway}/wado/homeCommunityId/2.999.250.1/"
        f"RetrieveLocationUID/{series.retrieve_location_uid}"
    )
    client = DICOMwebClient(url=base)
    instances = client.retrieve_series(study.study_instance_uid, series.series_instance_uid)
    assert {str(ds.SOPInstanceUID) for ds in instances} == {i.sop_instance_uid for i in series.instances}
    one = series.instances[0]
    ds = client.retrieve_instance(study.study_instance_uid, series.series_instance_uid, one.sop_instance_uid)
    assert str(ds.SOPInstanceUID) == one.sop_instance_uid


def test_requester_side_orthanc_pulls_a_series_through_xcwado(
    federation: tuple[Federation, Published], tmp_path: Path
) -> None:
    """MCWG 1.7.1 requestor viewing: country B's Orthanc pulls from the IIG into its own storage."""
    fed, pub = federation
    study = pub.data.studies[0]
    series = study.series[0]
    base = (
        f"{fed.plan.endpoints['AT'].gateway}/wado/homeCommunityId/2.999.250.1/"
        f"RetrieveLocationUID/{series.retrieve_location_uid}/"
    )
    config = OrthancConfig(
        tmp_path / "requester", free_port(), name="AT-requester", servers={"ncp-at": {"Url": base}}
    )
    with run_orthanc(config):
        body = {"Resources": [{"Study": study.study_instance_uid, "Series": series.series_instance_uid}]}
        r = httpx.post(f"{config.base_url}/dicom-web/servers/ncp-at/retrieve", json=body, timeout=60)
        assert r.status_code == 200, r.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = httpx.get(
                f"{config.dicomweb}studies/{study.study_instance_uid}/series/"
                f"{series.series_instance_uid}/instances"
            ).json()
            if len(found) == len(series.instances):
                break
            time.sleep(0.5)
        uids = {i["00080018"]["Value"][0] for i in found}
        assert uids == {i.sop_instance_uid for i in series.instances}
        expected = _expected(pub)
        for uid in uids:  # Orthanc's native API returns the stored file itself
            orthanc_id = httpx.post(f"{config.base_url}/tools/lookup", content=uid).json()[0]["ID"]
            got = httpx.get(f"{config.base_url}/instances/{orthanc_id}/file").content
            assert hashlib.sha256(got).hexdigest() == expected[uid]
