"""RAD-160 request paths (MADO Appendix XA) and the retrieveURL allowlist."""

from __future__ import annotations

import pytest

from ncp.errors import InvalidRequest
from ncp.gateway.rad160 import XcWadoPath, match_retrieve_url
from ncp.gateway.settings import AllowedBase

HC = "homeCommunityId/5.6.7.8/RetrieveLocationUID/1.2.840.9.10.11.12"


@pytest.mark.parametrize("resource", ["studies", "study"])
def test_both_spellings_of_the_study_segment_are_accepted(resource: str) -> None:
    xc = XcWadoPath.parse(f"{HC}/{resource}/1.2.3/")
    assert (xc.home_community_id, xc.retrieve_location_uid, xc.study) == (
        "5.6.7.8",
        "1.2.840.9.10.11.12",
        "1.2.3",
    )
    assert xc.resource() == "studies/1.2.3"


def test_series_instance_and_rendered_levels() -> None:
    xc = XcWadoPath.parse(f"{HC}/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered")
    assert (xc.series, xc.instance, xc.tail) == ("1.2.4", "1.2.5", "rendered")
    assert xc.xc_path() == f"{HC}/studies/1.2.3/series/1.2.4/instances/1.2.5/rendered"


@pytest.mark.parametrize(
    "path",
    [
        "homeCommunityId/urn:oid:5.6.7.8/RetrieveLocationUID/1.2.3/studies/1.2.3",
        f"{HC}/studies/1.2.3/series/1.02.4",
        f"{HC}/studies/../../etc/passwd",
        f"{HC}/studies/1.2.3/frames/1",
        f"{HC}/studies/1.2.3/series",
        f"{HC}/studies/1.2.3/series/1.2/instances/1.3/extra/1.4",
        "homeCommunityId/5.6.7.8/studies/1.2.3",
        f"{HC}/studies/{'1.' * 40}1",
    ],
)
def test_malformed_paths_are_refused(path: str) -> None:
    with pytest.raises(InvalidRequest):
        XcWadoPath.parse(path)


ALLOWED = (
    AllowedBase.parse("http://127.0.0.1:8042/dicom-web/"),
    AllowedBase.parse("https://pacs.fr.test/rs/"),
)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("127.0.0.1:8042/dicom-web/", ALLOWED[0]),
        ("http://127.0.0.1:8042/dicom-web/", ALLOWED[0]),
        ("http://127.0.0.1:8042/dicom-web/studies/1.2.3/series/1.2.4", ALLOWED[0]),
        ("pacs.fr.test/rs/", ALLOWED[1]),
        ("PACS.fr.test/rs", ALLOWED[1]),
        ("https://pacs.fr.test:443/rs/", ALLOWED[1]),
    ],
)
def test_allowlisted_retrieve_urls_select_the_configured_base(value: str, expected: AllowedBase) -> None:
    assert match_retrieve_url(value, ALLOWED) == expected


@pytest.mark.parametrize(
    "value",
    [
        "evil.example/dicom-web/",
        "127.0.0.1:8043/dicom-web/",
        "https://127.0.0.1:8042/dicom-web/",  # scheme differs from the allowlisted one
        "http://127.0.0.1:8042/other/",
        "http://127.0.0.1:8042/dicom-web/../admin/",
        "http://user@127.0.0.1:8042/dicom-web/",
        "http://127.0.0.1:8042@evil.example/dicom-web/",
        "http://127.0.0.1:8042/dicom-web%2F..%2Fadmin/",
        "file:///etc/passwd",
        "gopher://127.0.0.1:8042/dicom-web/",
        "http://0x7f000001:8042/dicom-web/",
        "http://2130706433:8042/dicom-web/",
        "http://[::1]:8042/dicom-web/",
        "http://127.0.0.1:8042\\@evil/dicom-web/",
        "http://pacs.fr.test\u3002/rs/",
        "",
    ],
)
def test_other_retrieve_urls_match_nothing(value: str) -> None:
    assert match_retrieve_url(value, ALLOWED) is None
