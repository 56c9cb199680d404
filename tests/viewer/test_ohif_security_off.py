"""OHIF renders through RAD-160 with security off too (a testbed run without tokens or mTLS): the viewer
sends no credential and still sees the study. Its own module: the secured site of test_ohif_rad160.py keeps
a browser open for its whole module, and this one starts another federation."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_ohif_rad160 import CT, assert_rendered, running_site

pytestmark = pytest.mark.orthanc


def test_ohif_renders_through_rad160_with_security_off(tmp_path: Path) -> None:
    with running_site(tmp_path, secure=False) as plain:
        for source in ("AT", "FR"):
            shown = plain.view(source, CT, token=False)
            assert_rendered(shown, plain.rad160_base(source, CT))
