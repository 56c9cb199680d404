"""Options behave as written: IDs after options, ``list --tag``, several ``--pacs``, help with defaults."""

from __future__ import annotations

import argparse
import hashlib
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from cli_support import load_runner, refused, xcwado

from ncp.cli import _parse, build_parser
from ncp.dicom.kos import build_kin, build_manifest
from ncp.dicom.multipart import encode_multipart_bytes, multipart_content_type, new_boundary
from ncp.pacs.app import PacsSettings, create_pacs_app
from ncp.scenario.runner import load_scenarios
from ncp.synth import synthesize, to_part10
from ncp.topology import builtin_names, builtin_topology


def test_scenario_ids_may_follow_the_options() -> None:
    args = _parse(["scenario", "run", "--target", "s.json", "NG-012", "--json", "r.json", "XB-001"])
    assert args.ids == ["NG-012", "XB-001"] and args.target == "s.json" and args.json == "r.json"
    assert _parse(["scenario", "run", "XB-001", "--tag", "happy"]).ids == ["XB-001"]


def test_an_unknown_id_after_the_options_reaches_the_selection(tmp_path: Path) -> None:
    """Refused as an unknown scenario, before any federation starts, not as an unknown argument."""
    done = xcwado("scenario", "run", "--tag", "negative", "ZZ-999", "--role-log", str(tmp_path / "r.log"))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "unknown scenario ID(s): ZZ-999" in done.stdout
    assert "unrecognized" not in done.stderr


def test_other_unknown_arguments_are_still_refused() -> None:
    done = xcwado("up", "--no-such-option")
    assert done.returncode == 2 and "unrecognized arguments: --no-such-option" in done.stderr
    assert "usage: xcwado up" in done.stderr


def test_scenario_list_filters_by_tag() -> None:
    done = xcwado("scenario", "list", "--tag", "security")
    assert done.returncode == 0
    listed = [line.split()[0] for line in done.stdout.splitlines()]
    expected = [s.id for s in load_scenarios() if "security" in s.tags]
    assert listed == expected and 0 < len(listed) < len(load_scenarios())


def _two_pacs_study() -> tuple[bytes, dict[str, list[bytes]]]:
    """A MADO manifest of a study spread over FR's two PACS, and each PACS's instances (Part 10)."""
    topology = builtin_topology()
    rluids = {
        p.retrieve_location_uid: f"http://{p.id}.example/dicom-web/" for p in topology.country("FR").pacs
    }
    data = synthesize(topology, "FR", retrieve_urls=rluids)
    study = next(s for s in data.studies if len({x.retrieve_location_uid for x in s.series}) == 2)
    where = {x.series_instance_uid: x.retrieve_location_uid for x in study.series}
    parts: dict[str, list[bytes]] = {}
    for ds in data.instances(study):
        parts.setdefault(where[str(ds.SeriesInstanceUID)], []).append(to_part10(ds))
    if study.key_images:  # the manifest references the KIN too, held with the first series (ncp.publish)
        parts[study.series[0].retrieve_location_uid].append(to_part10(build_kin(study)))
    return to_part10(build_manifest(study, encoding="MADO")), parts


def test_validate_resolves_a_manifest_against_every_pacs_given(
    tmp_path: Path, serve: Callable[..., str]
) -> None:
    manifest, parts = _two_pacs_study()
    bases = []
    for n, bodies in enumerate(parts.values()):
        pacs = serve(create_pacs_app(PacsSettings(storage_dir=tmp_path / f"pacs-{n}")))
        boundary = new_boundary()
        stow = httpx.post(
            f"{pacs}/dicom-web/studies",
            content=encode_multipart_bytes(bodies, "application/dicom", boundary),
            headers={"Content-Type": multipart_content_type("application/dicom", boundary)},
            timeout=60,
        )
        assert stow.status_code == 200
        bases.append(f"{pacs}/dicom-web/")
    path = tmp_path / f"manifest-{hashlib.sha256(manifest).hexdigest()[:8]}.dcm"
    path.write_bytes(manifest)
    both = xcwado("validate", str(path), "--pacs", bases[0], "--pacs", bases[1])
    assert both.returncode == 0, both.stdout
    one = xcwado("validate", str(path), "--pacs", bases[0])
    assert one.returncode == 1 and "not found" in one.stdout  # the other PACS's series are missing


def test_validate_refuses_a_pacs_that_is_not_a_url(tmp_path: Path) -> None:
    manifest, _ = _two_pacs_study()
    (tmp_path / "m.dcm").write_bytes(manifest)
    refused(xcwado("validate", str(tmp_path / "m.dcm"), "--pacs", "pacs.example"), "--pacs", "pacs.example")


def _help_of(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    """The help text as ``--help`` prints it, defaults included."""
    return str(parser._get_formatter()._get_help_string(action) or "")


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


@pytest.mark.parametrize("command", sorted(_subparsers(build_parser())))
def test_every_option_has_help_text_with_its_default(command: str) -> None:
    parser = _subparsers(build_parser())[command]
    text = parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"xcwado {command} {action.dest}: no help text"
        if action.option_strings and action.default not in (None, False, []):
            shown = _help_of(parser, action)
            assert "default" in shown, f"xcwado {command} {action.option_strings[0]}: default not shown"
    if any("--topology" in a.option_strings for a in parser._actions):
        assert ", ".join(builtin_names()) in " ".join(text.split())


def test_the_topology_help_lists_the_builtin_names() -> None:
    done = xcwado("up", "--help")
    assert done.returncode == 0
    flat = " ".join(done.stdout.split())
    assert (
        "default, three-country, wan" in flat
        and "--base-port" in flat
        and "(default: run/state.json)" in flat
    )


def test_load_help_names_the_command_and_every_option_has_help_with_its_default() -> None:
    done = xcwado("load", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: xcwado load"), done.stdout[:200]
    parser = load_runner().build_parser()
    for action in parser._actions:
        if isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"xcwado load {action.option_strings}: no help text"
        if action.default not in (None, False):
            shown = _help_of(parser, action)
            assert "default" in shown, f"xcwado load {action.option_strings[0]}: default not shown"
