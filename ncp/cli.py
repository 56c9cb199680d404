"""The ``xcwado`` command (ARCHITECTURE §8): demo, up, synth, validate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

from ncp.errors import NcpError

__all__ = ["main"]


def _source(value: str) -> str:
    """A topology file path, or the name of a shipped topology (``default``, ``three-country``, ``wan``)."""
    if value.startswith("builtin:") or value.endswith(".toml") or "/" in value:
        return value
    return f"builtin:{value}"


def cmd_demo(args: argparse.Namespace) -> int:
    from ncp.demo import run_demo

    run_dir = Path(args.run_dir) if args.run_dir else Path(tempfile.mkdtemp(prefix="xcwado-demo-"))
    result = run_demo(_source(args.topology), run_dir, treatment=args.treatment, affiliation=args.affiliation)
    return 0 if result.ok else 1


def cmd_up(args: argparse.Namespace) -> int:
    from ncp.federation import Federation
    from ncp.publish import seed_federation
    from ncp.synth import catalogue_json

    console = Console()
    run_dir = Path(args.run_dir)
    with Federation(_source(args.topology), run_dir, mode="process") as fed:
        if not args.no_seed:
            published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
            fed.catalogue = {"patients": [p for pub in published.values() for p in catalogue_json(pub.data)]}
        fed.write_state(Path(args.state))
        for code, ep in fed.plan.endpoints.countries.items():
            console.print(f"[bold]{code}[/] gateway {ep.gateway}  border {ep.border}")
        console.print(f"State file: {args.state}. Ctrl-C stops the federation.")
        stop = False

        def _stop(*_: object) -> None:
            nonlocal stop
            stop = True

        # SIGINT too, explicitly: a shell starts a background job with SIGINT ignored, which Python keeps
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _stop)
        while not stop:
            time.sleep(0.5)
    console.print("Federation stopped.")
    return 0


def cmd_synth(args: argparse.Namespace) -> int:
    from ncp.app import load_source
    from ncp.dicom.kos import build_kin, build_manifest, to_part10
    from ncp.synth import synthesize

    topology = load_source(_source(args.topology))
    out = Path(args.out)
    codes = [args.country] if args.country else list(topology.countries)
    count = 0
    for code in codes:
        rluids = {
            p.retrieve_location_uid: f"https://pacs-{p.id}.{code.lower()}.example/dicom-web/"
            for p in topology.country(code).pacs
        }
        data = synthesize(topology, code, retrieve_urls=rluids)
        for study in data.studies:
            folder = out / code / study.study_instance_uid
            folder.mkdir(parents=True, exist_ok=True)
            for ds in data.instances(study):
                (folder / f"{ds.SOPInstanceUID}.dcm").write_bytes(to_part10(ds))
                count += 1
            for encoding in ("MADO", "MCWG"):
                kos = build_manifest(study, encoding=encoding)
                (folder / f"manifest-{encoding}.dcm").write_bytes(to_part10(kos))
            if study.key_images:
                (folder / "kin.dcm").write_bytes(to_part10(build_kin(study)))
    print(f"wrote {count} instances and their manifests under {out}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    import httpx

    from ncp.dicom.validate import http_resolver, validate_manifest

    data = Path(args.file).read_bytes()
    with httpx.Client(timeout=30.0) as client:
        resolver = http_resolver(args.pacs, client) if args.pacs else None
        report = validate_manifest(data, resolve=resolver)
    print(report.render())
    return 0 if report.ok else 1


def cmd_scenario(args: argparse.Namespace) -> int:
    from ncp.scenario.runner import DEFAULT_DIR, list_scenarios, run_scenarios

    directory = Path(args.scenarios or os.environ.get("XCWADO_SCENARIOS") or DEFAULT_DIR)
    if not directory.is_dir():
        print(f"xcwado scenario: no scenario folder at {directory} (--scenarios DIR)", file=sys.stderr)
        return 2
    if args.action == "list":
        for sid, title, tags in list_scenarios(directory):
            print(f"{sid}  {title}  [{', '.join(tags)}]")
        return 0
    ids = None if args.all else (args.ids or None)
    if ids is None and not args.tag and not args.all:
        print("xcwado scenario run: give scenario IDs, --tag T or --all", file=sys.stderr)
        return 2
    return run_scenarios(
        ids,
        args.tag or None,
        _source(args.topology),
        junit=Path(args.junit) if args.junit else None,
        json_path=Path(args.json) if args.json else None,
        html=Path(args.html) if args.html else None,
        console=Console(),
        directory=directory,
        target=Path(args.target) if args.target else None,
    )


def cmd_load(args: argparse.Namespace) -> int:
    """A bounded headless Locust run (loadtests/run.py) in its own process: Locust patches gevent."""
    import subprocess

    runner = Path(__file__).resolve().parents[1] / "loadtests" / "run.py"
    if not runner.exists():
        print("xcwado load needs a source checkout (loadtests/ beside ncp/)", file=sys.stderr)
        return 2
    return subprocess.run([sys.executable, str(runner), *args.load_args], check=False).returncode


def cmd_serve_role(args: argparse.Namespace) -> int:
    from ncp.federation import run_role

    run_role(Path(args.plan), args.role)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    """Seed a federation that runs elsewhere (e.g. compose services) from its plan."""
    import json

    from ncp.app import Plan
    from ncp.federation import state_document
    from ncp.publish import seed_federation
    from ncp.synth import catalogue_json

    plan = Plan.from_json(json.loads(Path(args.plan).read_text()))
    published = asyncio.run(seed_federation(plan.topology, plan.endpoints))
    catalogue = {"patients": [p for pub in published.values() for p in catalogue_json(pub.data)]}
    Path(args.state).write_text(json.dumps(state_document(plan, catalogue), indent=2))
    return 0


def cmd_pki(args: argparse.Namespace) -> int:
    """Create the federation's test PKI for a plan (once; an existing one is kept)."""
    import json

    from ncp.app import Plan
    from ncp.security.pki import FederationPki

    plan = Plan.from_json(json.loads(Path(args.plan).read_text()))
    if plan.pki_dir is not None and not (plan.pki_dir / "registry.json").exists():
        FederationPki.create(plan.pki_dir, list(plan.endpoints.countries))
    return 0


def cmd_compose(args: argparse.Namespace) -> int:
    import json

    from ncp.deploy import compose_document, compose_plan, to_yaml

    source = _source(args.topology)
    plan = compose_plan(source)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(plan.to_json(), indent=2) + "\n")
    header = "# Generated by `xcwado compose`; regenerate rather than edit.\n"
    (out / "compose.yaml").write_text(
        header + to_yaml(compose_document(plan, source, args.topology_file)) + "\n"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xcwado", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="run the three cross-border steps end to end")
    demo.add_argument("--topology", default="default")
    demo.add_argument("--run-dir")
    demo.add_argument("--treatment", help="country of the consumer (B)")
    demo.add_argument("--affiliation", help="country of the patient (A)")
    demo.set_defaults(func=cmd_demo)

    up = sub.add_parser("up", help="start a federation and keep it running")
    up.add_argument("--topology", default="default")
    up.add_argument("--state", default="run/state.json")
    up.add_argument("--run-dir", default="run")
    up.add_argument("--no-seed", action="store_true")
    up.set_defaults(func=cmd_up)

    synth = sub.add_parser("synth", help="write the synthetic catalogue (DICOM, manifests) to a folder")
    synth.add_argument("--topology", default="default")
    synth.add_argument("--country")
    synth.add_argument("--out", default="run/synth")
    synth.set_defaults(func=cmd_synth)

    validate = sub.add_parser("validate", help="check a KOS manifest against the MCWG checklist")
    validate.add_argument("file")
    validate.add_argument("--pacs", help="DICOMweb base URL where every reference must resolve")
    validate.set_defaults(func=cmd_validate)

    scenario = sub.add_parser("scenario", help="list or run the scenario catalogue, with conformance reports")
    scenario.add_argument("action", choices=["list", "run"])
    scenario.add_argument("ids", nargs="*", help="scenario IDs (see `xcwado scenario list`)")
    scenario.add_argument("--all", action="store_true")
    scenario.add_argument("--tag", action="append")
    where = scenario.add_mutually_exclusive_group()
    where.add_argument("--topology", default="default", help="start this federation and run against it")
    where.add_argument(
        "--target",
        help="a state file (as `xcwado up` writes it) of running systems that hold the topology's "
        "synthetic catalogue: nothing is started",
    )
    scenario.add_argument(
        "--scenarios",
        help="the catalogue's folder (default: $XCWADO_SCENARIOS, else the checkout's scenarios/)",
    )
    scenario.add_argument("--junit")
    scenario.add_argument("--json")
    scenario.add_argument("--html")
    scenario.set_defaults(func=cmd_scenario)

    load = sub.add_parser(
        "load", help="Locust load test against a running federation (see loadtests/README.md)"
    )
    load.add_argument(
        "load_args", nargs=argparse.REMAINDER, help="--state FILE --profile steady --users 8 ..."
    )
    load.set_defaults(func=cmd_load)

    serve_role = sub.add_parser("serve-role", help="serve one role of a plan (the container entrypoint)")
    serve_role.add_argument("--plan", required=True)
    serve_role.add_argument("--role", required=True)
    serve_role.set_defaults(func=cmd_serve_role)

    seed = sub.add_parser("seed", help="seed a running federation described by a plan; write its state file")
    seed.add_argument("--plan", required=True)
    seed.add_argument("--state", required=True)
    seed.set_defaults(func=cmd_seed)

    pki = sub.add_parser("pki", help="create the federation's test PKI for a plan")
    pki.add_argument("--plan", required=True)
    pki.set_defaults(func=cmd_pki)

    compose = sub.add_parser("compose", help="write docker/plan.json and docker/compose.yaml for a topology")
    compose.add_argument("--topology", default="docker/topology.toml")
    compose.add_argument("--topology-file", default="./topology.toml", help="as the compose file mounts it")
    compose.add_argument("--out", default="docker")
    compose.set_defaults(func=cmd_compose)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    head = next((i for i, a in enumerate(argv) if a not in ("-v", "--verbose")), len(argv))
    if argv[head : head + 1] == ["load"]:
        # Everything after `load` is loadtests/run.py's, --help included: argparse's REMAINDER
        # would reject a leading option (`xcwado load --state FILE` failed with "unrecognized").
        logging.basicConfig(level=logging.INFO if head else logging.WARNING)
        return cmd_load(argparse.Namespace(load_args=argv[head + 1 :]))
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.func(args))
    except NcpError as exc:
        print(f"xcwado: {exc.message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
