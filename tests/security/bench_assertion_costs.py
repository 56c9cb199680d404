"""CPU per image request of NCP-B's ``Guard.assertion_for`` and NCP-A's ``Guard.peer`` (issue 16).

Not a test: a microbenchmark of the real classes in one process. Each call does what one image request
does at the two hops: AT's guard makes the ``X-NCP-Assertion`` header for FR, FR's guard checks it on a
request whose ASGI TLS extension carries AT's client certificate. ``--fresh`` gives every call a new
treatment context (what the first request of each context costs).

    .venv/bin/python tests/security/bench_assertion_costs.py PKI_DIR [--calls 10000] [--rounds 5] [--fresh]

To compare two trees, run it with ``PYTHONPATH`` on each, alternating rounds (the machine is shared).
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

from starlette.requests import Request

import ncp
from ncp.gateway.guard import Guard
from ncp.security.pki import FederationPki
from ncp.security.tokens import PatientRef

PATIENT = PatientRef("2.999.250.2", "FR-0001")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pki", type=Path, help="a PKI folder (made with FR, AT and NO if missing)")
    parser.add_argument("--calls", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--fresh", action="store_true", help="a new treatment context for every call")
    args = parser.parse_args()
    pki = (
        FederationPki.load(args.pki)
        if (args.pki / "registry.json").exists()
        else FederationPki.create(args.pki, ["FR", "AT", "NO"])
    )
    idp = pki.identity_provider("AT")
    hcp = idp.hcp_token("dr-hofer", "221", "AKH Wien", "Hospital", ["patient/*.read"])
    context = pki.gateway_verifier("AT").verify(idp.treatment_token(hcp, PATIENT.id, PATIENT.issuer))
    tls = {"client_cert_chain": [pki.client_credentials("AT").cert.read_text()]}
    sender, border = Guard("AT", pki), Guard("FR", pki)
    print(f"tree {Path(ncp.__file__).parent}, {args.calls} calls per round, fresh contexts: {args.fresh}")
    for _ in range(args.rounds):
        signing = checking = 0.0
        for i in range(args.calls):
            current = dataclasses.replace(context, token_id=f"context-{i}") if args.fresh else context
            t0 = time.process_time()
            headers = sender.assertion_for(current, "FR")
            t1 = time.process_time()
            raw = [(k.encode(), v.encode()) for k, v in headers.items()]
            request = Request({"type": "http", "headers": raw, "extensions": {"tls": tls}})
            t2 = time.process_time()
            border.peer(request, patient=PATIENT)
            t3 = time.process_time()
            signing += t1 - t0
            checking += t3 - t2
        us = 1e6 / args.calls
        print(f"assertion_for {signing * us:6.1f} us CPU/call   peer {checking * us:6.1f} us CPU/call")


if __name__ == "__main__":
    main()
