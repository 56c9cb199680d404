"""A clinician's viewer nobody here wrote renders studies through RAD-160: OHIF Viewer 2 (the prebuilt
bundle, ``make ohif``) in headless Chromium, served from its own origin, with the RAD-160 base of NCP-B's
gateway as its only DICOMweb server and the treatment token on every request, shows a synthetic CT study
and a JPEG-compressed study from Orthanc and from the embedded PACS behind NCP-A."""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from ohif_harness import OHIF_DIST, Rendered, Viewer, chromium, jpeg_baseline, open_study, stow
from playwright.sync_api import Browser

from ncp.consumer.client import ImagingConsumer
from ncp.federation import Federation
from ncp.gateway.front import Front
from ncp.orthanc import orthanc_available
from ncp.publish import Published, seed_federation
from ncp.server import free_port, serve_in_thread

pytestmark = pytest.mark.orthanc

# docs/img/ohif-rad160.png is rewritten with XCWADO_DOCS_IMG=1 (as the portal's), not by every run
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "ohif-rad160.png"
SCREENSHOT = DOCS_SCREENSHOT if os.environ.get("XCWADO_DOCS_IMG") else None
# FR's PACS is Orthanc, AT's the embedded one; each country's consumers view the other's studies.
TOPOLOGY = """
name = "ohif"
security = true
[synth]
patients_per_country = 2
studies_per_patient = 2
instance_kb = 32
[countries.FR]
home_community_id = "2.999.250.1"
patient_id_issuer = "2.999.250.2"
registries = [{{ id = "national" }}]
cors_origins = ["{origin}"]
[[countries.FR.pacs]]
id = "orthanc"
retrieve_location_uid = "2.25.249112837101579105183278066551769719101"
backend = "orthanc"
[countries.AT]
home_community_id = "2.999.40.1"
patient_id_issuer = "2.999.40.2"
architecture = "C"
registries = [{{ id = "national" }}]
cors_origins = ["{origin}"]
pacs = [{{ id = "vna", retrieve_location_uid = "2.25.124730087464102372658485198995786580382" }}]
"""
CONSUMER = {"FR": "AT", "AT": "FR"}
CT, JPEG = 0, 1  # study indexes: the synthetic CT study; the MR study, stored JPEG-compressed


@pytest.fixture(scope="module", autouse=True)
def tools_are_installed() -> None:
    """`make test` installs both; a viewer that is not there must never count as a pass."""
    if not OHIF_DIST.joinpath("index.umd.js").is_file():
        pytest.fail(f"the OHIF bundle is not in {OHIF_DIST}: run `make ohif`", pytrace=False)
    if not orthanc_available():
        pytest.fail("Orthanc is not installed: run `make system-deps`", pytrace=False)


@dataclass
class Site:
    fed: Federation
    published: dict[str, Published]
    viewer: Viewer
    viewer_url: str
    browser: Browser

    def rad160_base(self, source: str, index: int) -> str:
        series = self.published[source].data.studies[index].series[0]
        gateway = self.fed.plan.endpoints[CONSUMER[source]].gateway
        hcid = self.fed.topology.country(source).home_community_id
        return f"{gateway}/wado/homeCommunityId/{hcid}/RetrieveLocationUID/{series.retrieve_location_uid}"

    def treatment_token(self, source: str, index: int = CT) -> str:
        """A treatment token at the consumer's gateway for the patient of the study."""
        patient = self.published[source].data.studies[index].patient
        consumer = ImagingConsumer(self.fed.plan.endpoints[CONSUMER[source]].gateway)
        consumer.authenticate()
        consumer.identify(patient.issuer, patient.id)
        consumer.open_treatment_context(patient.issuer, patient.id)
        return consumer.headers["Authorization"].removeprefix("Bearer ")

    def view(
        self, source: str, index: int, *, token: bool = True, screenshot: Path | None = None
    ) -> Rendered:
        self.viewer.rad160_base = self.rad160_base(source, index)
        self.viewer.token = self.treatment_token(source, index) if token else None
        study = self.published[source].data.studies[index].study_instance_uid
        return open_study(self.browser, self.viewer_url, study, screenshot)


def _store_jpeg(fed: Federation, code: str, pub: Published) -> None:
    """Replace the instances of the country's second study in its PACS by JPEG Baseline versions."""
    study = pub.data.studies[JPEG]
    base = fed.plan.endpoints[code].pacs[study.series[0].retrieve_location_uid]
    if fed.topology.country(code).pacs[0].backend == "orthanc":  # Orthanc keeps a stored instance: delete
        rest = base.split("/dicom-web")[0]
        for found in httpx.post(f"{rest}/tools/lookup", content=study.study_instance_uid).json():
            httpx.delete(f"{rest}/studies/{found['ID']}").raise_for_status()
    stow(base, [jpeg_baseline(ds) for ds in pub.data.instances(study)])


@contextmanager
def running_site(run: Path, *, secure: bool, front: Front = "none") -> Iterator[Site]:
    port = free_port()
    topology = run / "topology.toml"
    text = TOPOLOGY.format(origin=f"http://127.0.0.1:{port}")
    topology.write_text(text if secure else text.replace("security = true", "security = false"))
    with Federation(str(topology), run / "run", mode="thread", front=front) as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        for code, pub in published.items():
            _store_jpeg(fed, code, pub)
        viewer = Viewer()
        with serve_in_thread(viewer.app(), port=port) as url, chromium() as browser:
            yield Site(fed, published, viewer, url, browser)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("ohif"), secure=True) as site:
        yield site


def assert_rendered(shown: Rendered, base: str) -> None:
    """Every RAD-160 request answered 200, frames among them and nothing but metadata besides; no error
    panel; a canvas with an image."""
    calls = shown.to(base)
    assert calls, shown.text[:500]
    assert all(status == 200 for _, status in calls), ([c for c in calls if c[1] != 200], shown.warnings)
    assert any("/frames/" in url for url, _ in calls), calls
    # study metadata, then frames: no QIDO, which XC-WADO does not carry across the border
    assert all(url.endswith("/metadata") or "/frames/" in url for url, _ in calls), calls
    assert shown.failures() == [], shown.text[:500]
    grey = shown.canvas_grey()
    assert grey.size > 100_000  # the viewport, not a thumbnail
    assert grey.std() > 10 and (grey > 32).mean() > 0.05, "the canvas is blank"


def assert_decoded_jpeg(shown: Rendered) -> None:
    """The frames crossed both gateways as JPEG (asked with ``transfer-syntax=*``): OHIF decoded them."""
    assert shown.frame_types and all("image/jpeg" in t for t in shown.frame_types), shown.frame_types
    assert "ISO_10918_1" in shown.text  # OHIF's overlay: Lossy Image Compression Method


def test_ohif_renders_a_ct_study_from_orthanc_through_rad160(site: Site) -> None:
    shown = site.view("FR", CT, screenshot=SCREENSHOT)
    assert_rendered(shown, site.rad160_base("FR", CT))
    assert "CT" in shown.text


def test_ohif_renders_a_jpeg_compressed_study_from_orthanc_through_rad160(site: Site) -> None:
    shown = site.view("FR", JPEG)
    assert_rendered(shown, site.rad160_base("FR", JPEG))
    assert_decoded_jpeg(shown)


def test_ohif_renders_a_ct_study_from_the_embedded_pacs_through_rad160(site: Site) -> None:
    assert_rendered(site.view("AT", CT), site.rad160_base("AT", CT))


def test_ohif_renders_a_jpeg_compressed_study_from_the_embedded_pacs_through_rad160(site: Site) -> None:
    shown = site.view("AT", JPEG)
    assert_rendered(shown, site.rad160_base("AT", JPEG))
    assert_decoded_jpeg(shown)


def test_without_the_treatment_token_the_viewer_shows_no_image(site: Site) -> None:
    shown = site.view("FR", CT, token=False)
    assert shown.canvas_png == b""
    assert "Failed to retrieve study data" in shown.failures()
    assert {status for _, status in shown.to(site.rad160_base("FR", CT))} == {401}


def test_the_same_viewer_on_an_origin_not_configured_reads_nothing(site: Site) -> None:
    """The gateway names only configured origins: Chromium refuses the preflight's answer (403)."""
    other = Viewer(site.rad160_base("FR", CT), site.treatment_token("FR"))
    with serve_in_thread(other.app()) as url:
        shown = open_study(site.browser, url, site.published["FR"].data.studies[CT].study_instance_uid)
    assert shown.canvas_png == b""
    assert "Failed to retrieve study data" in shown.failures()
    assert {status for _, status in shown.to(site.rad160_base("FR", CT))} == {None}  # blocked by CORS


@pytest.mark.parametrize("source", ["FR", "AT"], ids=["orthanc", "embedded"])
def test_bulk_data_uris_in_metadata_name_rad160_and_follow_the_guard(site: Site, source: str) -> None:
    """Orthanc writes its own address into BulkDataURIs (NCP-A rewrites it), the embedded PACS the base it
    is told in ``Forwarded``: either way the viewer gets URIs on NCP-B's RAD-160 base that it can follow,
    for its patient's study and no other."""
    studies = site.published[source].data.studies
    base, auth = site.rad160_base(source, CT), {"Authorization": f"Bearer {site.treatment_token(source)}"}
    study = studies[CT].study_instance_uid
    metadata = httpx.get(f"{base}/studies/{study}/metadata", headers=auth, timeout=30)
    assert metadata.status_code == 200
    bulk = re.findall(r'"BulkDataURI"\s*:\s*"([^"]+)"', metadata.text)
    assert bulk and all(uri.startswith(f"{base}/studies/{study}/series/") for uri in bulk), bulk[:3]
    answer = httpx.get(bulk[0], headers=auth, timeout=30)
    assert answer.status_code == 200 and len(answer.content) > 1024
    # the same instance under the patient's other study: the PACS has no such instance there
    mismatched = httpx.get(bulk[0].replace(study, studies[JPEG].study_instance_uid), headers=auth, timeout=30)
    assert mismatched.status_code == 404
    # under another patient's study, bulk data or frames: refused by NCP-A before any byte is fetched
    other = next(s for s in studies if s.patient != studies[CT].patient).study_instance_uid
    frames = re.sub(r"/bulk(data)?/.*", "/frames/1", bulk[0])
    for uri in (bulk[0], frames):
        refused = httpx.get(uri.replace(study, other), headers=auth, timeout=30)
        assert refused.status_code == 403
        assert "warning" in refused.headers


@pytest.mark.parametrize("source", ["FR", "AT"], ids=["orthanc", "embedded"])
@pytest.mark.parametrize(
    ("resource", "accept"),
    [
        ("frames/99", 'multipart/related; type="application/octet-stream"'),
        ("frames/1", "toto"),
        ("frames/1", 'multipart/related; type="application/x-nothing"'),
        ("frames/1", "image/jpeg;;q=x"),
        ("bulkdata/00100010", "application/octet-stream"),
    ],
)
def test_what_the_pacs_cannot_answer_is_a_4xx_with_a_warning_never_a_5xx(
    site: Site, source: str, resource: str, accept: str
) -> None:
    study = site.published[source].data.studies[CT]
    series = study.series[0]
    url = (
        f"{site.rad160_base(source, CT)}/studies/{study.study_instance_uid}"
        f"/series/{series.series_instance_uid}/instances/{series.instances[0].sop_instance_uid}/{resource}"
    )
    auth = {"Authorization": f"Bearer {site.treatment_token(source)}", "Accept": accept}
    r = httpx.get(url, headers=auth, timeout=30)
    assert 400 <= r.status_code < 500
    assert "warning" in r.headers  # Orthanc sends none: NCP-A adds one (PS3.18 8.6.2)


@pytest.mark.parametrize("source", ["FR", "AT"], ids=["orthanc", "embedded"])
def test_no_address_inside_the_affiliation_country_reaches_the_viewer(site: Site, source: str) -> None:
    """Frames, bulk data and metadata as a viewer gets them name no PACS address, in headers or parts."""
    study = site.published[source].data.studies[CT]
    series, pacs = study.series[0], site.fed.plan.endpoints[source].pacs
    internal = {url.split("/")[2] for url in pacs.values()} | {
        site.fed.plan.endpoints[source].border.split("/")[2]
    }
    instance = (
        f"{site.rad160_base(source, CT)}/studies/{study.study_instance_uid}"
        f"/series/{series.series_instance_uid}/instances/{series.instances[0].sop_instance_uid}"
    )
    auth = {"Authorization": f"Bearer {site.treatment_token(source)}"}
    metadata = httpx.get(f"{instance}/metadata", headers=auth, timeout=30)
    bulk = re.findall(r'"BulkDataURI"\s*:\s*"([^"]+)"', metadata.text)[0]
    for url in (f"{instance}/metadata", f"{instance}/frames/1", bulk):
        r = httpx.get(url, headers=auth, timeout=30)
        assert r.status_code == 200, url
        heads = str(r.headers) + "".join(
            block.split(b"\r\n\r\n", 1)[0].decode("latin-1") for block in r.content.split(b"\r\n--")
        )
        leaked = [address for address in internal if address in heads]
        assert not leaked, (url, leaked)
    assert not any(address in metadata.text for address in internal)


def test_ohif_lists_and_opens_a_study_through_the_wia_facade(site: Site) -> None:
    """MCWG 1.8: at one base URL of NCP-B, OHIF with its default lazy loading finds the study's series by
    QIDO (answered from the patient's manifests) and shows their frames (mapped onto RAD-160)."""
    base = f"{site.fed.plan.endpoints[CONSUMER['AT']].gateway}/wia/dicom-web"
    site.viewer.rad160_base, site.viewer.lazy = base, True
    site.viewer.token = site.treatment_token("AT", CT)
    try:
        study = site.published["AT"].data.studies[CT].study_instance_uid
        shown = open_study(site.browser, site.viewer_url, study, None)
    finally:
        site.viewer.lazy = False
    calls = shown.to(base)
    assert all(status == 200 for _, status in calls), [c for c in calls if c[1] != 200]
    assert any(re.search(r"/series(\?|$)", url) for url, _ in calls), calls  # QIDO for the series
    assert any("/frames/" in url for url, _ in calls), calls
    assert shown.failures() == [], shown.text[:500]
    grey = shown.canvas_grey()
    assert grey.std() > 10 and (grey > 32).mean() > 0.05, "the canvas is blank"
