"""Start and stop a whole topology: every role on its own loopback port, health-checked.

Roles run as child processes (``xcwado up``, the demo) or as uvicorn threads in this process
(tests); both go through :func:`ncp.app.build_role`, so they exercise the same code. Child processes are
forked from a fork server that has imported the roles' code once (:func:`_role_process`). The relays of
emulated links (:func:`ncp.app.build_relay`) run as ``python -m ncp.link.relay`` or in a thread.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal

import httpx

from ncp.app import Plan, Role, build_relay, build_role, make_plan
from ncp.errors import NcpError
from ncp.forkserver import ForkServer, RoleChild
from ncp.gateway.front import Front, FrontSpec, front_config, private_socket_dir
from ncp.gateway.proxy import DataPlane
from ncp.link import FaultSpec, RelayThread
from ncp.nginx import NGINX_ABSENT, heap_kept, nginx_binary, nginx_conf, nginx_process
from ncp.orthanc import OrthancConfig, run_orthanc
from ncp.security.pki import FederationPki
from ncp.server import run_forever, serve_in_thread, stop_process
from ncp.topology import Topology

__all__ = [
    "Federation",
    "FrontUnavailable",
    "InUse",
    "NotHealthy",
    "front_spec",
    "hold_run",
    "run_front",
    "run_role",
    "state_document",
]

log = logging.getLogger(__name__)
Mode = Literal["process", "thread"]


class Federation:
    """A running federation. Use as a context manager; ``state`` is the state-file content."""

    def __init__(
        self,
        source: str,
        run_dir: Path,
        *,
        mode: Mode = "process",
        data_plane: DataPlane = "h1",
        secure: bool | None = None,
        link_faults: Mapping[str, FaultSpec] | None = None,
        base_port: int | None = None,
        front: Front = "none",
    ) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self._require_front(front)
        self.plan = make_plan(
            source,
            run_dir,
            data_plane=data_plane,
            secure=secure,
            link_faults=link_faults,
            base_port=base_port,
            front=front,
        )
        if self.plan.pki_dir is not None and not (self.plan.pki_dir / "registry.json").exists():
            FederationPki.create(self.plan.pki_dir, list(self.plan.endpoints.countries), host=self.plan.host)
        self.pids: dict[str, int] = {}
        self.front_pids: dict[str, tuple[int, ...]] = {}  # by country: its nginx front's master and worker
        # process mode: to see a role that died, and to tell every role to stop at once
        self._procs: dict[str, subprocess.Popen[bytes] | RoleChild] = {}
        self._forks: ForkServer | None = None
        self.relays: dict[str, RelayThread] = {}  # thread mode: link relays by role id, for their counters
        self.mode = mode
        self._roles: dict[str, ExitStack] = {}
        self.catalogue: dict[str, Any] = {"patients": []}

    def _require_front(self, front: Front) -> None:
        """The front asked for can run here: this machine's nginx runs it."""
        if front == "nginx" and nginx_binary() is None:
            raise FrontUnavailable(
                f"front 'nginx': {NGINX_ABSENT}; install Debian's nginx (make system-deps)"
            )

    @property
    def topology(self) -> Topology:
        return self.plan.topology

    def __enter__(self) -> Federation:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, timeout: float = 60.0) -> None:
        self.plan.write(self.plan.run_dir / "plan.json")
        if self.plan.sockets is not None:  # only this user may reach the gateways' sockets behind nginx
            private_socket_dir(self.plan.sockets)
        for role in self.plan.roles:
            self._roles[role.id] = self._start_role(role)
        self.wait_healthy(timeout)

    def _start_role(self, role: Role) -> ExitStack:
        stack = ExitStack()
        try:
            if role.kind == "link":
                stack.enter_context(self._relay(role))
            elif role.kind == "orthanc":
                config = OrthancConfig(
                    self.plan.run_dir / role.country / f"orthanc-{role.name}", role.ports[0]
                )
                stack.enter_context(run_orthanc(config))
            elif self.mode == "process":
                plan_file = self.plan.run_dir / "plan.json"
                if self._forks is None:
                    self._forks = ForkServer(_log_path(self.plan.run_dir, "forkserver"))
                proc = stack.enter_context(_role_process(self._forks, plan_file, role.id, self.plan.run_dir))
                self.pids[role.id] = proc.pid
                self._procs[role.id] = proc
                self._start_front(role, stack)
            else:
                # log_config=None: uvicorn would otherwise point its loggers at this process's stderr on
                # every start; left alone they reach the root logger, which the caller directs (the
                # scenario runner sends the tracebacks of expected faults to a file, not its console)
                for app, port, options in build_role(self.plan, role.id):
                    options = {"log_config": None, **options}
                    stack.enter_context(serve_in_thread(app, host=self.plan.host, port=port, **options))
                self._start_front(role, stack)
        except BaseException:
            stack.close()
            raise
        return stack

    def _start_front(self, role: Role, stack: ExitStack) -> None:
        """A gateway's nginx front on its public ports (``front = "nginx"``, :mod:`ncp.gateway.front`)."""
        spec = front_spec(self.plan, role)
        if spec is None:
            return
        binary = nginx_binary()
        assert binary is not None  # checked when the federation was made
        self.front_pids[role.country] = stack.enter_context(
            nginx_process(binary, spec.root, front_config(spec), role.ports[0])
        )

    @contextmanager
    def _relay(self, role: Role) -> Iterator[None]:
        """An emulated link between two gateways: ``python -m ncp.link.relay`` or a relay thread."""
        spec = build_relay(self.plan, role.id)
        if self.mode == "process":
            with _child(["ncp.link.relay", *spec.argv()], role.id, self.plan.run_dir) as proc:
                self.pids[role.id] = proc.pid
                self._procs[role.id] = proc
                yield
            return
        with RelayThread(*spec.listen, *spec.target, spec.profile) as relay:
            self.relays[role.id] = relay
            try:
                yield
            finally:
                del self.relays[role.id]

    @contextmanager
    def role_down(self, role_id: str, timeout: float = 60.0) -> Iterator[None]:
        """An outage: the role is stopped for the block, then started again on the same ports."""
        role = self.plan.role(role_id)
        if role_id not in self._roles:
            raise KeyError(f"role {role_id!r} is not running; running: {sorted(self._roles)}")
        self._roles.pop(role_id).close()
        self._procs.pop(role_id, None)
        try:
            yield
        finally:
            self._roles[role_id] = self._start_role(role)
            self.wait_healthy(timeout)

    @contextmanager
    def link_fault(self, role_id: str, fault: FaultSpec) -> Iterator[None]:
        """A broken link for the block (thread mode): connections open on it are reset, every one opened
        meanwhile has ``fault``; the link's own shape comes back after."""
        relay = self.relays.get(role_id)
        if relay is None:
            raise KeyError(f"no relay {role_id!r} runs in this process; relays: {sorted(self.relays)}")
        shape = relay.relay.profile
        relay.set_profile(replace(shape, fault=fault), drop=True)
        try:
            yield
        finally:
            relay.set_profile(shape, drop=True)

    def stop(self) -> None:
        """Every role winds down at once (a listener takes a quarter of a second to stop)."""
        for proc in self._procs.values():
            proc.terminate()
        stacks = list(self._roles.values())
        self._roles.clear()
        if stacks:
            with ThreadPoolExecutor(max_workers=len(stacks)) as pool:
                for closing in [pool.submit(stack.close) for stack in stacks]:
                    closing.result()
        if self._forks is not None:
            self._forks.close()
            self._forks = None
        if self.plan.sockets is not None:
            shutil.rmtree(self.plan.sockets, ignore_errors=True)

    def health_urls(self) -> list[str]:
        """Every listener but secure borders (they take only NCP client certificates)."""
        return [url for url, _ in self._health_checks() if not url.startswith("tcp://")]

    def _health_checks(self) -> list[tuple[str, str]]:
        """(probe URL, role id) for every role that can be probed; link relays by a TCP connect (``tcp://``),
        except a link set to refuse, which is working when it refuses."""
        secure_borders = {
            ep.border for ep in self.plan.endpoints.countries.values() if ep.border.startswith("https")
        }
        refusing = {rid for rid, fault in self.plan.link_faults.items() if fault.mode == "refuse"}
        checks = []
        for role in self.plan.roles:
            if role.kind == "link":  # relays TCP to a border: a connect is all it answers
                if role.id not in refusing:
                    checks.append((f"tcp://{self.plan.host}:{role.ports[0]}", role.id))
            elif role.kind != "orthanc":
                for port in role.ports:
                    base = f"http://{self.plan.host}:{port}"
                    if base.replace("http://", "https://") not in secure_borders:
                        checks.append((f"{base}/health", role.id))
        return checks

    def wait_healthy(self, timeout: float) -> None:
        """Return once every role answers; a role process that exits, or ``timeout``, is a
        :class:`NotHealthy` naming the roles and their logs."""
        deadline = time.monotonic() + timeout
        pending = dict(self._health_checks())
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for url in sorted(pending):
                    if _healthy(client, url):
                        del pending[url]
                dead = {r: status for r, p in self._procs.items() if (status := p.poll()) is not None}
                if dead:
                    raise NotHealthy(self._why(dead, "exited with status"))
                if pending and time.monotonic() > deadline:
                    roles = {role: f"not answering after {timeout:g} s" for role in pending.values()}
                    raise NotHealthy(self._why(roles, ""))
                if pending:
                    time.sleep(0.1)

    def _why(self, roles: Mapping[str, object], what: str) -> str:
        logs = self.plan.run_dir / "logs"
        told = [f"{role} {what} {detail}".replace("  ", " ") for role, detail in sorted(roles.items())]
        where = f"; their logs are in {logs}" if self.mode == "process" else ""
        return f"the federation did not start: {', '.join(told)}{where}"

    def state(self) -> dict[str, Any]:
        return state_document(self.plan, self.catalogue)

    def write_state(self, path: Path) -> None:
        """Write the state file whole or not at all: a client polling for it never reads half of it."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.partial")
        partial.write_text(json.dumps(self.state(), indent=2))
        os.replace(partial, path)


class FrontUnavailable(NcpError):
    """The front asked for cannot run here."""


class InUse(NcpError):
    """The run folder or state file belongs to a federation that is running."""


class NotHealthy(NcpError):
    """A role of the federation never answered, or its process exited, while starting."""


@contextmanager
def hold_run(run_dir: Path, state: Path | None = None) -> Iterator[None]:
    """Hold the run folder (and the state file's name) while a federation runs from it.

    A second ``xcwado up`` on either is refused: it would re-seed the first one's folder and overwrite
    its state file, leaving the first running on ports nobody can find. The locks are ``flock``s, so the
    kernel releases them when the holder dies, however it dies; the lock files themselves stay (removing
    one would let two processes lock two different files of the same name)."""
    locks = [(run_dir / ".xcwado.lock", f"run folder {run_dir}", "--run-dir")]
    if state is not None:
        locks.append((state.with_name(f".{state.name}.lock"), f"state file {state}", "--state"))
    with ExitStack() as stack:
        for path, what, option in locks:
            stack.enter_context(_flock(path, what, option))
        yield


@contextmanager
def _flock(path: Path, what: str, option: str) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            raise InUse(
                f"{what} is in use by a running xcwado up (pid {holder}); stop it or choose another {option}"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)  # names the holder in the next one's refusal
        yield
    finally:
        os.close(fd)  # releases the lock


def _healthy(client: httpx.Client, url: str) -> bool:
    """``/health`` answers 200; a ``tcp://`` relay accepts a connection (it carries TLS, not HTTP)."""
    try:
        if url.startswith("tcp://"):
            host, _, port = url.removeprefix("tcp://").rpartition(":")
            socket.create_connection((host, int(port)), timeout=2.0).close()
            return True
        return client.get(url).status_code == 200
    except (httpx.HTTPError, OSError):
        return False


def state_document(plan: Plan, catalogue: dict[str, Any]) -> dict[str, Any]:
    """The state file (docs/state-file.md): where every role listens, what it holds, how to get in."""
    return {
        "topology": plan.source,
        "run_dir": str(plan.run_dir),  # the simulated systems' files (scenarios inject storage faults there)
        "countries": plan.endpoints.to_json(),
        "catalogue": catalogue,
        "security": security_document(plan),
        "links": links_document(plan),
    }


def links_document(plan: Plan) -> dict[str, Any]:
    """The emulated links: where each relay listens, the border it reaches and what it does to bytes."""
    links = {}
    for role in plan.roles:
        if role.kind == "link":
            spec = build_relay(plan, role.id)
            p = spec.profile
            links[role.id] = {
                "listen": "{}:{}".format(*spec.listen),
                "target": "{}:{}".format(*spec.target),
                "rtt_ms": p.rtt_ms,
                "bandwidth_mbit": p.bandwidth_mbit,
                "jitter_ms": p.jitter_ms,
                "fault": str(p.fault) if p.fault else None,
            }
    return links


def security_document(plan: Plan) -> dict[str, Any]:
    """What an outside client needs: the CA, NCP client credentials, and how to obtain tokens."""
    if plan.pki_dir is None:
        return {"enabled": False}
    pki = FederationPki.load(plan.pki_dir)
    return {
        "enabled": True,
        "pki_dir": str(plan.pki_dir),  # the test PKI itself: scenarios forge expired and foreign tokens
        "ca_file": str(pki.ca_file),
        "ncp_client_credentials": {
            cc: {"cert": str(pki.client_credentials(cc).cert), "key": str(pki.client_credentials(cc).key)}
            for cc in pki.countries
        },
        "tokens": {
            cc: {
                "hcp_token": {
                    "method": "POST",
                    "url": f"{ep.gateway}/idp/token",
                    "form": {
                        "subject": "dr-example",
                        "role": "2211",
                        "organisation": f"Hospital {cc}",
                        "facility": "Hospital",
                        "scope": "patient/*.read",
                    },
                },
                "treatment_token": {
                    "method": "POST",
                    "url": f"{ep.gateway}/idp/treatment",
                    "headers": {"Authorization": "Bearer <hcp token>"},
                    "form": {
                        "patient_id": "<id>",
                        "patient_issuer": "<issuer OID>",
                        "purpose_of_use": "TREATMENT",
                    },
                },
                "use": "Authorization: Bearer <treatment token> on every request to the gateway",
            }
            for cc, ep in plan.endpoints.countries.items()
        },
    }


@contextmanager
def _role_process(forks: ForkServer, plan_file: Path, role_id: str, run_dir: Path) -> Iterator[RoleChild]:
    """The role forked from ``forks``, which has imported the roles' code once (:mod:`ncp.forkserver`),
    logging to ``logs/<role>.log``. The container entrypoint runs the same :func:`run_role` as
    ``python -m ncp.cli serve-role`` (docker/Dockerfile)."""
    proc = forks.spawn(plan_file, role_id, _log_path(run_dir, role_id))
    try:
        yield proc
    finally:
        stop_process(proc, 10)


def _log_path(run_dir: Path, role_id: str) -> Path:
    path = run_dir / "logs" / (role_id.replace("/", "-") + ".log")
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _child(module_args: list[str], role_id: str, run_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m MODULE ARGS`` logging to ``logs/<role>.log``, stopped with SIGTERM."""
    with open(_log_path(run_dir, role_id), "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *module_args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield proc
    finally:
        stop_process(proc, 10)


def front_spec(plan: Plan, role: Role) -> FrontSpec | None:
    """The nginx front of a gateway ``role`` when the plan has fronts, else None."""
    if role.kind != "gateway" or plan.sockets is None:
        return None
    return FrontSpec(
        role.country,
        plan.host,
        role.ports[0],
        role.ports[1],
        plan.run_dir,
        borders=tuple(ep.border for ep in plan.endpoints_seen_from(role.country).countries.values()),
        pacs=tuple(plan.endpoints[role.country].pacs.values()),
        pki=FederationPki.load(plan.pki_dir) if plan.pki_dir else None,
        sockets=plan.sockets,
    )


def run_front(plan_file: Path, role_id: str) -> None:
    """Entry point of a gateway's front in a container: write its nginx configuration, then become nginx
    (as the user the container runs as, in the foreground)."""
    plan = Plan.from_json(json.loads(plan_file.read_text()))
    spec, binary = front_spec(plan, plan.role(role_id)), nginx_binary()
    if spec is None:
        raise FrontUnavailable(f"{role_id} has no front: it is no gateway, or the plan has no fronts")
    if binary is None:
        raise FrontUnavailable(f"{role_id}'s front: {NGINX_ABSENT}")
    argv = nginx_conf(spec.root, front_config(spec), as_root=os.geteuid() == 0)
    os.execve(binary, [binary, *argv], heap_kept(os.environ))


def run_role(plan_file: Path, role_id: str) -> None:
    """Entry point of a role process: serve every listener of the role until SIGTERM."""
    import asyncio

    import uvicorn

    plan = Plan.from_json(json.loads(plan_file.read_text()))
    servers = [
        uvicorn.Server(
            uvicorn.Config(
                app,
                host=plan.host,
                port=port,
                log_level="warning",
                lifespan="on",
                timeout_graceful_shutdown=5,  # keep-alive peers must not hold a stopping NCP
                access_log=False,  # query strings name patients: the audit trail records requests
                **{"proxy_headers": False, **options},  # X-Forwarded-* only from configured proxies
            )
        )
        for app, port, options in build_role(plan, role_id)
    ]

    async def main() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    run_forever(main())
