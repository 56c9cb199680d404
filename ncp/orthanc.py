"""A managed Orthanc (Debian ``orthanc`` + ``orthanc-dicomweb``) as a country's PACS or a requester-side PACS.

Orthanc 1.10 always binds 0.0.0.0; an ``LD_PRELOAD`` shim compiled on first use rewrites its
``bind()`` calls to 127.0.0.1, so it never listens beyond loopback. Compression is off (the
Debian default gzips every instance), the DICOM listener and remote access are off, and the
storage directory is its own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from ncp.server import stop_process

__all__ = ["ORTHANC", "OrthancConfig", "build_loopback_shim", "orthanc_available", "run_orthanc"]

ORTHANC = "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"

_SHIM_C = r"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <string.h>
#include <sys/socket.h>
/* Rebind every IPv4 wildcard listener to 127.0.0.1 and every IPv6 one to ::1. */
int bind(int fd, const struct sockaddr *addr, socklen_t len) {
    static int (*real_bind)(int, const struct sockaddr *, socklen_t) = 0;
    if (!real_bind) real_bind = dlsym(RTLD_NEXT, "bind");
    if (addr && addr->sa_family == AF_INET && len >= sizeof(struct sockaddr_in)) {
        struct sockaddr_in in4;
        memcpy(&in4, addr, sizeof in4);
        if (in4.sin_addr.s_addr == htonl(INADDR_ANY)) in4.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        return real_bind(fd, (struct sockaddr *)&in4, sizeof in4);
    }
    if (addr && addr->sa_family == AF_INET6 && len >= sizeof(struct sockaddr_in6)) {
        struct sockaddr_in6 in6;
        memcpy(&in6, addr, sizeof in6);
        if (memcmp(&in6.sin6_addr, &in6addr_any, sizeof in6addr_any) == 0) in6.sin6_addr = in6addr_loopback;
        return real_bind(fd, (struct sockaddr *)&in6, sizeof in6);
    }
    return real_bind(fd, addr, len);
}
"""


def orthanc_available() -> bool:
    return Path(ORTHANC).exists() and Path(DICOMWEB_PLUGIN).exists()


def build_loopback_shim(directory: Path) -> Path:
    """Compile the bind() shim once per directory (needs gcc, present on the project's machines)."""
    lib = directory / "loopback-bind.so"
    if lib.exists():
        return lib
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / "loopback-bind.c"
    source.write_text(_SHIM_C)
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise RuntimeError("a C compiler is needed to keep Orthanc on loopback (apt-get install gcc)")
    subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(lib), str(source), "-ldl"], check=True)
    return lib


class OrthancConfig:
    """An Orthanc configuration for tests and managed PACS; ``servers`` enables the DICOMweb client side."""

    def __init__(
        self,
        directory: Path,
        http_port: int,
        *,
        name: str = "xcwado",
        servers: Mapping[str, Any] | None = None,
    ) -> None:
        self.directory = directory
        self.http_port = http_port
        self.name = name
        self.servers = dict(servers or {})

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb(self) -> str:
        return f"{self.base_url}/dicom-web/"

    def to_json(self) -> dict[str, Any]:
        return {
            "Name": self.name,
            "StorageDirectory": str(self.directory / "storage"),
            "IndexDirectory": str(self.directory / "storage"),
            "HttpPort": self.http_port,
            "HttpCompressionEnabled": False,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "Plugins": [DICOMWEB_PLUGIN],
            "StableAge": 1,
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": False,
                "Host": f"127.0.0.1:{self.http_port}",
                "Servers": self.servers,
            },
        }


@contextmanager
def run_orthanc(config: OrthancConfig, timeout: float = 30.0) -> Iterator[OrthancConfig]:
    """Run Orthanc with ``config`` on loopback until the context exits."""
    config.directory.mkdir(parents=True, exist_ok=True)
    config_file = config.directory / "orthanc.json"
    config_file.write_text(json.dumps(config.to_json(), indent=2))
    shim = build_loopback_shim(config.directory.parent / ".shim")
    log = open(config.directory / "orthanc.log", "ab")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [ORTHANC, str(config_file)],
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "LD_PRELOAD": str(shim)},
    )
    try:
        _wait_up(config, proc, timeout)
        yield config
    finally:
        stop_process(proc, 15)
        log.close()


def _wait_up(config: OrthancConfig, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(
                f"Orthanc exited with {proc.returncode}; see {config.directory / 'orthanc.log'}"
            )
        try:
            if httpx.get(f"{config.base_url}/system", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"Orthanc did not answer on {config.base_url} within {timeout:g} s")
