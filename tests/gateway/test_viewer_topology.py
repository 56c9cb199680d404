"""The topology keys for viewers: ``viewer_resources`` (RAD-160 beyond MADO Appendix XA, on by default) and
``cors_origins`` (browser origins allowed to call a country's gateway listener), checked like every key."""

from __future__ import annotations

from typing import Any

import pytest

from ncp.errors import InvalidTopology
from ncp.topology import Country, builtin_topology, parse_topology


def _at(**keys: Any) -> Country:
    raw = {
        "countries": {
            "AT": {
                "home_community_id": "2.999.40.1",
                "patient_id_issuer": "2.999.40.2",
                "registries": [{"id": "national"}],
                "pacs": [{"id": "vna", "retrieve_location_uid": "2.25.1"}],
                **keys,
            }
        }
    }
    return parse_topology(raw).country("AT")


def test_viewer_resources_are_on_and_no_origin_is_allowed_by_default() -> None:
    for country in builtin_topology("default").countries.values():
        assert country.viewer_resources is True
        assert country.cors_origins == ()


def test_viewer_resources_can_be_switched_off_per_country() -> None:
    assert _at(viewer_resources=False).viewer_resources is False


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://viewer.example", "https://viewer.example"),
        ("https://Viewer.Example:443", "https://viewer.example"),  # as a browser sends it in Origin
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("http://[::1]:3000", "http://[::1]:3000"),
    ],
)
def test_cors_origins_are_kept_as_browsers_serialise_them(given: str, kept: str) -> None:
    assert _at(cors_origins=[given]).cors_origins == (kept,)


@pytest.mark.parametrize(
    "origin",
    [
        "*",
        "https://viewer.example/",
        "https://viewer.example/ohif",
        "https://viewer.example?x=1",
        "viewer.example",
        "ftp://viewer.example",
        "https://user@viewer.example",
        "https://viewer.example:99999",
        "null",
        42,
    ],
)
def test_anything_but_an_origin_is_refused_naming_the_field(origin: object) -> None:
    with pytest.raises(InvalidTopology, match=r"countries\.AT\.cors_origins"):
        _at(cors_origins=[origin])


@pytest.mark.parametrize(
    ("keys", "message"),
    [
        ({"viewer_resources": "yes"}, "countries.AT.viewer_resources' has the wrong type"),
        ({"cors_origins": "https://viewer.example"}, "countries.AT.cors_origins' has the wrong type"),
        ({"cors_origin": ["https://viewer.example"]}, "did you mean 'cors_origins'"),
    ],
)
def test_misspelt_or_mistyped_keys_are_refused(keys: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidTopology, match=message.replace(".", r"\.")):
        _at(**keys)
