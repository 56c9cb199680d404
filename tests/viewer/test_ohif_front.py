"""OHIF renders through RAD-160 with each gateway behind its nginx front (docs/decisions.md, "The nginx
front"): the same four studies as test_ohif_rad160.py, through nginx's lane where it carries them. Its own
module: the site there keeps a browser open for its whole module, and this one starts another federation."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from test_ohif_rad160 import CT, JPEG, Site, assert_decoded_jpeg, assert_rendered, running_site

pytestmark = pytest.mark.orthanc


@pytest.fixture(scope="module")
def fronted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    with running_site(tmp_path_factory.mktemp("ohif-front"), secure=True, front="nginx") as site:
        yield site


@pytest.mark.parametrize(
    ("source", "index"),
    [("FR", CT), ("FR", JPEG), ("AT", CT), ("AT", JPEG)],
    ids=["orthanc-ct", "orthanc-jpeg", "embedded-ct", "embedded-jpeg"],
)
def test_ohif_renders_the_same_studies_through_the_nginx_fronts(
    fronted: Site, source: str, index: int
) -> None:
    """nginx carries the embedded PACS's frames across both fronts, the gateways Orthanc's (whose answers
    name Orthanc) and the metadata; the viewer sees one RAD-160 server either way."""
    shown = fronted.view(source, index)
    assert_rendered(shown, fronted.rad160_base(source, index))
    if index == JPEG:
        assert_decoded_jpeg(shown)


def test_without_the_treatment_token_the_fronts_show_the_viewer_no_image(fronted: Site) -> None:
    shown = fronted.view("AT", CT, token=False)
    assert shown.canvas_png == b""
    assert {status for _, status in shown.to(fronted.rad160_base("AT", CT))} == {401}
