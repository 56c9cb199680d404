"""The ``xcwado`` command (docs/architecture.md): demo, up, synth, validate."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from ncp.errors import NcpError

if TYPE_CHECKING:
    from ncp.app import Plan
    from ncp.dicom.validate import Resolver
    from ncp.federation import Federation
    from ncp.topology import Topology

__all__ = ["main"]


class UsageError(NcpError):
    """An input to fix before anything starts; shown as one line, exit status 2."""


class _Help(argparse.RawDescriptionHelpFormatter):
    """Every option's help ends with its default, unless it says it already or there is none to say."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if "default" in text or default in (None, False, [], argparse.SUPPRESS) or not action.option_strings:
            return text
        return f"{text} (default: %(default)s)"


def _builtin_names() -> list[str]:
    from ncp.topology import builtin_names

    return builtin_names()


def _source(value: str) -> str:
    """A topology file path, or the name of a shipped topology (``default``, ``three-country``, ``wan``)."""
    if value.startswith("builtin:") or value.endswith(".toml") or "/" in value or Path(value).is_file():
        return value
    return f"builtin:{value}"


def _topology(value: str) -> Topology:
    """The topology, read and checked now: a wrong name or key fails before anything starts."""
    from ncp.app import load_source

    return load_source(_source(value))


def _writable(path: Path, option: str) -> Path:
    """``path`` as an absolute path, once a file can be written there; else a UsageError naming the
    option. Checked before a federation starts: finding out after leaves it running unannounced."""
    path = Path(os.path.abspath(path))
    if path.is_dir():
        raise UsageError(f"{option} {path} is a folder; name a file")
    blocking = next((p for p in path.parents if p.exists() and not p.is_dir()), None)
    if blocking is not None:
        raise UsageError(f"{option} {path}: {blocking} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path.parent, prefix=".xcwado-probe-"):
            pass
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write there ({exc.strerror or exc})") from None
    return path


def _writable_dir(path: Path, option: str) -> Path:
    path = Path(os.path.abspath(path))
    _writable(path / ".xcwado-probe", option)
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    from ncp.demo import run_demo
    from ncp.federation import hold_run

    _check_countries(_topology(args.topology), args)
    if not args.run_dir:
        run_dir = Path(tempfile.mkdtemp(prefix="xcwado-demo-"))
    else:
        run_dir = _writable_dir(Path(args.run_dir), "--run-dir")
    with hold_run(run_dir):
        result = run_demo(
            _source(args.topology), run_dir, treatment=args.treatment, affiliation=args.affiliation
        )
    return 0 if result.ok else 1


def _check_countries(topology: Topology, args: argparse.Namespace) -> None:
    codes = list(topology.countries)
    for option, code in (("--treatment", args.treatment), ("--affiliation", args.affiliation)):
        if code is not None and code not in codes:
            raise UsageError(
                f"{option} {code} is not a country of the topology {topology.name}; "
                f"its countries: {', '.join(codes)}"
            )
    if args.treatment and args.treatment == (args.affiliation or codes[0]):
        raise UsageError(
            f"--treatment {args.treatment} is also the patient's country (--affiliation): "
            "a cross-border consultation needs two countries"
        )


def cmd_up(args: argparse.Namespace) -> int:
    from ncp.containers import make_federation
    from ncp.federation import hold_run

    _topology(args.topology)
    state = _writable(Path(args.state), "--state")
    run_dir = _writable_dir(Path(args.run_dir), "--run-dir")
    console = Console()
    with hold_run(run_dir, state):
        state.unlink(missing_ok=True)  # left by a run that was killed: it names ports nobody serves
        try:
            fed = make_federation(
                _source(args.topology),
                run_dir,
                runtime=args.runtime,
                base_port=args.base_port,
                front=args.front,
            )
            with fed:
                _seed_and_announce(fed, state, args.no_seed, console)
                _wait_for_stop()
        finally:
            # the state file describes a running federation: once it stops, nobody must find it
            state.unlink(missing_ok=True)
    console.print("Federation stopped.")
    return 0


def _seed_and_announce(fed: Federation, state: Path, no_seed: bool, console: Console) -> None:
    from ncp.publish import seed_federation
    from ncp.synth import catalogue_json

    if not no_seed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints))
        fed.catalogue = {"patients": [p for pub in published.values() for p in catalogue_json(pub.data)]}
    fed.write_state(state)
    for code, ep in fed.plan.endpoints.countries.items():
        console.print(f"[bold]{code}[/] gateway {ep.gateway}  border {ep.border}")
    console.print(f"State file: {state}. Ctrl-C stops the federation.")


def _wait_for_stop() -> None:
    stop = False

    def _stop(*_: object) -> None:
        nonlocal stop
        stop = True

    # SIGINT too, explicitly: a shell starts a background job with SIGINT ignored, which Python keeps
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _stop)
    while not stop:
        time.sleep(0.5)


def cmd_synth(args: argparse.Namespace) -> int:
    from ncp.dicom.kos import build_kin, build_manifest, to_part10
    from ncp.synth import synthesize

    topology = _topology(args.topology)
    out = Path(args.out)
    codes = [topology.country(args.country).code] if args.country else list(topology.countries)
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

    data = _dicom_file(Path(args.file))
    for url in args.pacs or []:
        if not url.startswith(("http://", "https://")):
            raise UsageError(f"--pacs {url!r} is not a DICOMweb base URL (http:// or https://)")
    with httpx.Client(timeout=30.0) as client:
        resolvers = [http_resolver(url, client) for url in args.pacs or []]
        report = validate_manifest(data, resolve=_any_of(resolvers) if resolvers else None)
    print(report.render())
    return 0 if report.ok else 1


def _dicom_file(path: Path) -> bytes:
    """The file's bytes, once it is known to be DICOM: Part 10 (``DICM`` at byte 128) or a bare dataset
    that starts with a group 0002 or 0008 element in explicit VR (what the validator also reads)."""
    if not path.is_file():
        raise UsageError(f"no file {path}" + (" (a folder)" if path.is_dir() else ""))
    data = path.read_bytes()
    bare = data[:2] in (b"\x02\x00", b"\x08\x00") and data[4:6].isalpha() and data[4:6].isupper()
    if data[128:132] != b"DICM" and not bare:
        raise UsageError(f"{path} is not DICOM (no 'DICM' at byte 128): give a KOS manifest file")
    return data


def _any_of(resolvers: Sequence[Resolver]) -> Resolver:
    """A reference resolves when any of the PACS holds it: one manifest may span several PACS."""
    return lambda study, series, sop: any(r(study, series, sop) for r in resolvers)


def cmd_scenario(args: argparse.Namespace) -> int:
    from ncp.scenario.runner import DEFAULT_DIR, list_scenarios, run_scenarios

    directory = Path(args.scenarios or os.environ.get("XCWADO_SCENARIOS") or DEFAULT_DIR)
    if not directory.is_dir():
        raise UsageError(f"no scenario folder at {directory} (--scenarios DIR)")
    if args.action == "list":
        wanted = set(args.tag or ())
        for sid, title, tags in list_scenarios(directory):
            if not wanted or wanted & set(tags):
                print(f"{sid}  {title}  [{', '.join(tags)}]")
        return 0
    ids = None if args.all else (args.ids or None)
    if ids is None and not args.tag and not args.all:
        raise UsageError("give scenario IDs, --tag T or --all")
    reports = {
        opt: _writable(Path(value), f"--{opt}") if value else None
        for opt, value in (("junit", args.junit), ("json", args.json), ("html", args.html))
    }
    if args.target:
        _listening(Path(args.target))
    else:
        _topology(args.topology)
    return run_scenarios(
        ids,
        args.tag or None,
        _source(args.topology),
        junit=reports["junit"],
        json_path=reports["json"],
        html=reports["html"],
        console=Console(),
        directory=directory,
        target=Path(args.target) if args.target else None,
        role_log=None if args.target else _writable(Path(args.role_log), "--role-log"),
    )


def _listening(state: Path) -> None:
    """Refuse a target where nothing listens, before the catalogue is even loaded (seconds on a busy
    machine); a file that is not a state file is left to the runner, which says what is wrong with it."""
    from ncp.state import FederationState, StateFileError
    from ncp.topology import nothing_listens, unreachable

    try:
        endpoints = FederationState.from_path(state).endpoints()
    except StateFileError:
        return
    down = unreachable(endpoints.entry_points())
    if down:
        raise UsageError(f"target {state}: {nothing_listens(down)}")


def cmd_load(args: argparse.Namespace) -> int:
    """A bounded headless Locust run (loadtests/run.py) in its own process: Locust patches gevent."""
    import subprocess

    runner = Path(__file__).resolve().parents[1] / "loadtests" / "run.py"
    if not runner.exists():
        print("xcwado load: needs a source checkout (loadtests/ beside ncp/)", file=sys.stderr)
        return 2
    env = {**os.environ, "XCWADO_LOAD_PROG": "xcwado load"}  # its usage and errors name this command
    command = [sys.executable, str(runner), *args.load_args]
    return subprocess.run(command, check=False, env=env).returncode


def _plan(path: str, role: str | None = None) -> Plan:
    """The plan file a deployment command is given, checked: a missing or foreign file, or a role it
    does not have, is one line naming the file (it was a traceback)."""
    import json

    from ncp.app import Plan

    try:
        plan = Plan.from_json(json.loads(Path(path).read_text()))
    except OSError as exc:
        raise UsageError(f"--plan {path}: {exc.strerror or exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise UsageError(f"--plan {path}: not a plan as `xcwado compose` writes it ({exc})") from None
    if role is not None and role not in {r.id for r in plan.roles}:
        raise UsageError(f"--role {role} is not in {path}; its roles: {', '.join(r.id for r in plan.roles)}")
    return plan


def cmd_serve_role(args: argparse.Namespace) -> int:
    from ncp.federation import run_front, run_role

    _plan(args.plan, args.role)
    (run_front if args.front else run_role)(Path(args.plan), args.role)
    return 0


def cmd_seed(args: argparse.Namespace) -> int:
    """Seed a federation that runs elsewhere (e.g. compose services) from its plan."""
    import json

    from ncp.federation import state_document
    from ncp.publish import seed_federation
    from ncp.synth import catalogue_json
    from ncp.topology import nothing_listens, unreachable

    plan = _plan(args.plan)
    state = _writable(Path(args.state), "--state")
    down = unreachable(plan.endpoints.entry_points())
    if down:
        raise UsageError(f"the federation of {args.plan} is not running: {nothing_listens(down)}")
    published = asyncio.run(seed_federation(plan.topology, plan.endpoints))
    catalogue = {"patients": [p for pub in published.values() for p in catalogue_json(pub.data)]}
    state.write_text(json.dumps(state_document(plan, catalogue), indent=2))
    return 0


def cmd_pki(args: argparse.Namespace) -> int:
    """Create the federation's test PKI for a plan (once; an existing one is kept)."""
    from ncp.security.pki import FederationPki

    plan = _plan(args.plan)
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


def _port(value: str) -> int:
    port = int(value)
    if not 0 < port < 65536:
        raise argparse.ArgumentTypeError(f"{value} is not a port (1-65535)")
    return port


def _topology_option(parser: argparse._ActionsContainer, what: str = "the federation to start") -> None:
    parser.add_argument(
        "--topology",
        default="default",
        metavar="NAME|FILE",
        help=f"{what}: a built-in topology ({', '.join(_builtin_names())}) or a topology .toml file",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xcwado", description=__doc__, formatter_class=_Help)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, func: Any, text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text, formatter_class=_Help)
        p.set_defaults(func=func, command_parser=p)
        return p

    _demo_parser(command("demo", cmd_demo, "run the three cross-border steps end to end"))
    _up_parser(command("up", cmd_up, "start a federation, seed it, write its state file, run until Ctrl-C"))
    synth = command("synth", cmd_synth, "write the synthetic catalogue (DICOM, manifests) to a folder")
    _topology_option(synth, "the topology whose catalogue to write")
    synth.add_argument("--country", help="only this country's catalogue (default: every country)")
    synth.add_argument("--out", default="run/synth", help="output folder")
    _validate_parser(command("validate", cmd_validate, "check a KOS manifest against the MCWG checklist"))
    _scenario_parser(
        command("scenario", cmd_scenario, "list or run the scenario catalogue, with conformance reports")
    )
    load = command("load", cmd_load, "Locust load test against a running federation (loadtests/README.md)")
    load.add_argument("load_args", nargs=argparse.REMAINDER, help="see `xcwado load --help`")
    _deploy_parsers(command)
    return parser


def _demo_parser(demo: argparse.ArgumentParser) -> None:
    _topology_option(demo)
    demo.add_argument("--run-dir", help="folder for the roles' files (default: a new temporary folder)")
    demo.add_argument(
        "--treatment", help="country of the consumer (B) (default: the first other than --affiliation)"
    )
    demo.add_argument("--affiliation", help="country of the patient (A) (default: the topology's first)")


def _up_parser(up: argparse.ArgumentParser) -> None:
    _topology_option(up)
    up.add_argument(
        "--state", default="run/state.json", help="where to write the state file; removed when stopped"
    )
    up.add_argument("--run-dir", default="run", help="folder for the roles' files, held while running")
    up.add_argument(
        "--base-port",
        type=_port,
        metavar="N",
        help="fixed ports: the roles take consecutive ports from N, in the order the state file lists "
        "them (default: any free ports)",
    )
    up.add_argument("--no-seed", action="store_true", help="start empty: publish no synthetic catalogue")
    up.add_argument(
        "--runtime",
        choices=["process", "docker"],
        default="process",
        help="each role a process, or a container of xcwado-testbed:latest on the host's network "
        "(make docker; pip install -e '.[docker]') (default: process)",
    )
    up.add_argument(
        "--front",
        choices=["none", "nginx"],
        default="none",
        help="nginx (Debian's) on each gateway's public ports streams the images while the gateway decides "
        "every request (docs/decisions.md, 'The nginx front'); with --runtime docker the image's nginx, "
        "each front a container (default: none)",
    )


def _validate_parser(validate: argparse.ArgumentParser) -> None:
    validate.add_argument("file", help="a KOS manifest (DICOM Part 10 file)")
    validate.add_argument(
        "--pacs",
        action="append",
        metavar="URL",
        help="DICOMweb base URL of a PACS; repeat for a manifest that spans several: every reference "
        "must resolve in one of them (default: no resolution check)",
    )


def _scenario_parser(scenario: argparse.ArgumentParser) -> None:
    scenario.add_argument("action", choices=["list", "run"], help="list the catalogue, or run scenarios")
    scenario.add_argument(
        "ids", nargs="*", help="scenario IDs or prefixes (NG-), before or after the options"
    )
    scenario.add_argument("--all", action="store_true", help="run every scenario")
    scenario.add_argument(
        "--tag", action="append", metavar="T", help="scenarios with this tag; repeatable (default: any tag)"
    )
    where = scenario.add_mutually_exclusive_group()
    _topology_option(where, "start this federation and run against it")
    where.add_argument(
        "--target",
        metavar="STATE",
        help="a state file (as `xcwado up` writes it) of running systems that hold the topology's "
        "synthetic catalogue: nothing is started (default: start federations)",
    )
    scenario.add_argument(
        "--scenarios",
        metavar="DIR",
        help="the catalogue's folder (default: $XCWADO_SCENARIOS, else the checkout's scenarios/)",
    )
    scenario.add_argument("--junit", metavar="FILE", help="write a JUnit XML report (default: none)")
    scenario.add_argument("--json", metavar="FILE", help="write a JSON report (default: none)")
    scenario.add_argument("--html", metavar="FILE", help="write a self-contained HTML report (default: none)")
    scenario.add_argument(
        "--role-log",
        default="run/scenario-roles.log",
        metavar="FILE",
        help="where the started roles log (expected faults log tracebacks there, not on the console)",
    )


def _deploy_parsers(command: Any) -> None:
    serve_role = command("serve-role", cmd_serve_role, "serve one role of a plan (the container entrypoint)")
    serve_role.add_argument("--plan", required=True, help="plan.json (as `xcwado compose` writes it)")
    serve_role.add_argument("--role", required=True, help="the role to serve, e.g. FR/gateway")
    serve_role.add_argument(
        "--front", action="store_true", help="a gateway's nginx front instead (the plan's front = nginx)"
    )
    seed = command("seed", cmd_seed, "seed a running federation described by a plan; write its state file")
    seed.add_argument("--plan", required=True, help="plan.json of the running federation")
    seed.add_argument("--state", required=True, help="where to write the state file")
    pki = command("pki", cmd_pki, "create the federation's test PKI for a plan")
    pki.add_argument("--plan", required=True, help="plan.json naming the PKI folder")
    compose = command("compose", cmd_compose, "write docker/plan.json and docker/compose.yaml for a topology")
    _topology_option(compose, "the federation to deploy")
    compose.set_defaults(topology="docker/topology.toml")
    compose.add_argument("--topology-file", default="./topology.toml", help="as the compose file mounts it")
    compose.add_argument("--out", default="docker", help="output folder")


def _parse(argv: list[str]) -> argparse.Namespace:
    """Parse; scenario IDs may also follow the options (``scenario run --target S NG-012``), which a
    ``nargs='*'`` positional alone refuses: argparse fills it, empty, at the first option."""
    args, extra = build_parser().parse_known_args(argv)
    command_parser: argparse.ArgumentParser = args.command_parser
    if args.command == "scenario":
        args.ids += [x for x in extra if not x.startswith("-")]
        extra = [x for x in extra if x.startswith("-")]
    if extra:
        command_parser.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    head = next((i for i, a in enumerate(argv) if a not in ("-v", "--verbose")), len(argv))
    if argv[head : head + 1] == ["load"]:
        # Everything after `load` is loadtests/run.py's, --help included: argparse's REMAINDER
        # would reject a leading option (`xcwado load --state FILE` failed with "unrecognized").
        logging.basicConfig(level=logging.INFO if head else logging.WARNING)
        return cmd_load(argparse.Namespace(load_args=argv[head + 1 :]))
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING)
    try:
        return int(args.func(args))
    except NcpError as exc:
        print(f"xcwado {args.command}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before `up` listens for it: everything started is stopped by now
        print(f"xcwado {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
