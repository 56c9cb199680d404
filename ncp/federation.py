"""Start and stop a whole topology: every role on its own loopback port, health-checked.

Roles run as child processes (``xcwado up``, the demo) or as uvicorn threads in this process
(tests); both go through :func:`ncp.app.build_role`, so they exercise the same code.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Literal

import httpx

from ncp.app import Plan, build_role, make_plan
from ncp.orthanc import OrthancConfig, run_orthanc
from ncp.security.pki import FederationPki
from ncp.server import serve_in_thread
from ncp.topology import Topology

__all__ = ["Federation", "run_role", "state_document"]

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
        data_plane: Literal["aiohttp", "httpx"] = "aiohttp",
        secure: bool | None = None,
    ) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        self.plan = make_plan(source, run_dir, data_plane=data_plane, secure=secure)
        if self.plan.pki_dir is not None and not (self.plan.pki_dir / "registry.json").exists():
            FederationPki.create(self.plan.pki_dir, list(self.plan.endpoints.countries), host=self.plan.host)
        self.pids: dict[str, int] = {}
        self.mode = mode
        self._stack = ExitStack()
        self.catalogue: dict[str, Any] = {"patients": []}

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
        plan_file = self.plan.run_dir / "plan.json"
        self.plan.write(plan_file)
        for role in self.plan.roles:
            if role.kind == "orthanc":
                config = OrthancConfig(
                    self.plan.run_dir / role.country / f"orthanc-{role.name}", role.ports[0]
                )
                self._stack.enter_context(run_orthanc(config))
            elif self.mode == "process":
                proc = self._stack.enter_context(_process(plan_file, role.id, self.plan.run_dir))
                self.pids[role.id] = proc.pid
            else:
                for app, port, options in build_role(self.plan, role.id):
                    self._stack.enter_context(serve_in_thread(app, host=self.plan.host, port=port, **options))
        self.wait_healthy(timeout)

    def stop(self) -> None:
        self._stack.close()

    def health_urls(self) -> list[str]:
        """Every listener but secure borders (they take only NCP client certificates)."""
        borders = {
            url
            for ep in self.plan.endpoints.countries.values()
            for url in [ep.border]
            if url.startswith("https")
        }
        urls = [
            f"http://{self.plan.host}:{port}"
            for role in self.plan.roles
            if role.kind != "orthanc"
            for port in role.ports
        ]
        return [f"{u}/health" for u in urls if u.replace("http://", "https://") not in borders]

    def wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = set(self.health_urls())
        with httpx.Client(timeout=2.0) as client:
            while pending:
                for url in sorted(pending):
                    try:
                        if client.get(url).status_code == 200:
                            pending.discard(url)
                    except httpx.HTTPError:
                        pass
                if pending and time.monotonic() > deadline:
                    raise RuntimeError(f"roles not healthy after {timeout:g} s: {sorted(pending)}")
                if pending:
                    time.sleep(0.1)

    def state(self) -> dict[str, Any]:
        return state_document(self.plan, self.catalogue)

    def write_state(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.state(), indent=2))


def state_document(plan: Plan, catalogue: dict[str, Any]) -> dict[str, Any]:
    """The state file (ARCHITECTURE §8, contract): where every role listens, what it holds, how to get in."""
    return {
        "topology": plan.source,
        "run_dir": str(plan.run_dir),  # the simulated systems' files (scenarios inject storage faults there)
        "countries": plan.endpoints.to_json(),
        "catalogue": catalogue,
        "security": security_document(plan),
    }


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
def _process(plan_file: Path, role_id: str, run_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    log_path = run_dir / "logs" / (role_id.replace("/", "-") + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as out:
        proc = subprocess.Popen(
            # the container entrypoint's command (docker/Dockerfile): one code path for both
            [sys.executable, "-m", "ncp.cli", "serve-role", "--plan", str(plan_file), "--role", role_id],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


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
                **options,
            )
        )
        for app, port, options in build_role(plan, role_id)
    ]

    async def main() -> None:
        await asyncio.gather(*(s.serve() for s in servers))

    asyncio.run(main())
