"""nginx from Debian as a process of ours: the gateways' front (:mod:`ncp.gateway.front`) and ``make bench``'s
reference proxies. One worker per instance, in the foreground, every file under one folder."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

__all__ = [
    "NGINX_ABSENT",
    "NGINX_STREAM",
    "heap_kept",
    "nginx_binary",
    "nginx_conf",
    "nginx_process",
    "process_children",
]

NGINX_ABSENT = "nginx is not installed (neither on PATH nor /usr/sbin/nginx)"
# What the Python gateways do (ncp/gateway/proxy.py): HTTP/1.1 keep-alive to the next hop, the answer passed
# on as it arrives, up to 256 KiB per read (proxy_buffer_size: the most nginx reads at once unbuffered; the
# buffers' sizes must agree with it, though unbuffered proxying uses none of them).
NGINX_STREAM = (
    'proxy_http_version 1.1; proxy_set_header Connection ""; proxy_buffering off; proxy_buffer_size 256k; '
    "proxy_buffers 4 256k; proxy_busy_buffers_size 256k;"
)


def nginx_binary() -> str | None:
    """nginx on PATH, else Debian's /usr/sbin/nginx (not on a non-root user's PATH); None when absent."""
    return shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def nginx_conf(root: Path, http: str, *, as_root: bool) -> list[str]:
    """Write nginx's configuration under ``root`` with ``http`` as its http block and one worker, in the
    foreground (one process per hop, as a gateway is), every file under ``root``; the arguments that start
    nginx on it. ``as_root``: its master runs as root, and then its worker too."""
    (root / "tmp").mkdir(parents=True, exist_ok=True)
    kinds = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = " ".join(f"{kind}_temp_path {root}/tmp;" for kind in kinds)
    (root / "nginx.conf").write_text(f"""
{"user root;" if as_root else ""} worker_processes 1; daemon off;
pid {root}/nginx.pid; error_log {root}/error.log;
events {{ worker_connections 1024; }}
http {{
  access_log off; keepalive_requests 100000; {temp}
{http}
}}
""")
    return ["-c", str(root / "nginx.conf"), "-p", str(root), "-e", str(root / "error.log")]


@contextmanager
def nginx_process(binary: str, root: Path, http: str, port: int) -> Iterator[tuple[int, ...]]:
    """nginx (:func:`nginx_conf`) as a process of ours; yields the master's and the worker's pids once
    ``port`` listens."""
    command = [binary, *nginx_conf(root, http, as_root=os.geteuid() == 0)]
    log = root / "error.log"
    # SIGTERM when the thread that started it ends (Linux PR_SET_PDEATHSIG, set by util-linux's setpriv,
    # which then execs nginx): a federation owner that is killed leaves no nginx holding its ports
    setpriv = shutil.which("setpriv")
    argv = [setpriv, "--pdeathsig", "TERM", "--", *command] if setpriv else command
    proc = subprocess.Popen(argv, env=heap_kept(os.environ))
    try:
        deadline = time.monotonic() + 15
        while not ((workers := process_children(proc.pid)) and _listening(port)):
            if proc.poll() is not None or time.monotonic() > deadline:
                reason = log.read_text()[-600:] if log.exists() else "no error log"
                raise RuntimeError(f"nginx ({root / 'nginx.conf'}) did not start: {reason}")
            time.sleep(0.05)
        yield (proc.pid, *workers)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def heap_kept(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with glibc's malloc told to keep nginx's per-request buffers on the heap: by default a
    256 KiB proxy buffer (``NGINX_STREAM``) is mapped fresh for each request and unmapped after, and the
    kernel's page faults filling it cost 12-19 % of the front's CPU per image (docs/benchmarks.md,
    "Round 6"). The workers inherit it from the master (fork, no exec)."""
    mine = f"glibc.malloc.mmap_threshold={_MMAP_THRESHOLD}:glibc.malloc.trim_threshold={_TRIM_THRESHOLD}"
    theirs = environ.get("GLIBC_TUNABLES")
    return {**environ, "GLIBC_TUNABLES": f"{theirs}:{mine}" if theirs else mine}


_MMAP_THRESHOLD = 4 * 1024 * 1024  # above every buffer nginx takes per request (4 x 256 KiB at most)
_TRIM_THRESHOLD = 64 * 1024 * 1024  # free heap kept before it is given back to the kernel


def process_children(pid: int) -> tuple[int, ...]:
    """The processes whose parent is ``pid`` (``/proc/PID/stat`` field 4)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue  # a process that ended while the list was read
    return tuple(found)


def _listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True
