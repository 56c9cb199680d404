"""The images' healthcheck: GET $XCWADO_HEALTH_URL (http://host:port/path), healthy on 200; no URL, healthy.

Run as ``python3 -I -S``, with nothing but ``socket``: Docker runs it every 5 s in every role container, and
``urllib.request`` would cost ~4x the CPU on a machine whose cores the federation shares.
"""

import os
import socket
import sys

url = os.environ.get("XCWADO_HEALTH_URL", "")
if url:
    address, _, path = url.removeprefix("http://").partition("/")
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=2) as s:
            s.sendall(f"GET /{path} HTTP/1.0\r\nHost: {address}\r\n\r\n".encode())
            status = s.recv(64).split(b" ", 2)[1:2]
    except OSError as exc:
        sys.exit(f"{url}: {exc}")
    sys.exit(0 if status == [b"200"] else f"{url}: {status}")
