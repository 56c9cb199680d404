"""Synthetic catalogues of the shipped topologies, built once per session (records are immutable)."""

from __future__ import annotations

import pytest
from synth_helpers import synth

from ncp.synth import CountryData
from ncp.topology import Topology, builtin_topology


@pytest.fixture(scope="session")
def default_topology() -> Topology:
    return builtin_topology("default")


@pytest.fixture(scope="session")
def three_topology() -> Topology:
    return builtin_topology("three-country")


@pytest.fixture(scope="session")
def fr(default_topology: Topology) -> CountryData:
    return synth(default_topology, "FR")


@pytest.fixture(scope="session")
def every_country(default_topology: Topology, three_topology: Topology) -> list[CountryData]:
    """Each country of both shipped topologies (default: 3 patients x 2 studies; three-country: 2 x 2)."""
    return [synth(t, code) for t in (default_topology, three_topology) for code in t.countries]
