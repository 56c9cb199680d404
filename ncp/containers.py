"""The testbed in containers (issue 17): images that build without a registry, and the federation run as
containers through the Docker SDK (the Python ``docker`` package, extra ``docker``).

``python -m ncp.containers``:

* ``base``: a local Debian base image (``xcwado-base:bookworm``) made by debootstrap from the mirror the
  host's apt uses, for hosts without registry access (``make docker-base``);
* ``build``: the wheelhouse on the host (``pip wheel '.[load]'``), then ``xcwado-testbed:latest`` and
  ``xcwado-orthanc:latest`` from a staged build context; an image built from the same Dockerfile, base and
  wheels is reused (``make docker``);
* ``compose --run-dir DIR [--topology T]``: a host-network compose deployment in DIR
  (:func:`ncp.deploy.write_host_compose`); ``up``/``down --run-dir DIR`` run it with ``docker-compose``,
  checking the ports first and waiting for the seed.

:class:`DockerFederation` is :class:`ncp.federation.Federation` with every role a container on the host's
network (``xcwado up --runtime docker``): same plan, ports, PKI, state file and stop behaviour, and with
``front="nginx"`` each gateway's nginx front a container of its own, from the image's nginx.

Every failure a user can fix is a :class:`ContainerError` whose message is one line: what is wrong and the
command that fixes it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import importlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import tomllib
import zipfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ncp.app import Plan, Role, load_source
from ncp.deploy import (
    CONTAINER_UID,
    IMAGE,
    ORTHANC_IMAGE,
    ContainerSpec,
    absolute_source,
    host_plan,
    load_plan,
    ports_taken,
    role_containers,
    write_host_compose,
)
from ncp.errors import NcpError
from ncp.federation import Federation, FrontUnavailable, NotHealthy
from ncp.gateway.front import Front, front_root, private_socket_dir
from ncp.nginx import process_children

# The `docker` package has no type information (and mypy would take the checkout's docker/ folder for it).
DockerClient = Any
Container = Any

__all__ = [
    "DEFAULT_BASE",
    "IMAGE",
    "LOCAL_BASE",
    "ORTHANC_IMAGE",
    "BuildResult",
    "ContainerError",
    "DockerFederation",
    "apt_mirror",
    "build_base",
    "build_images",
    "build_wheelhouse",
    "compose_down",
    "compose_up",
    "engine",
    "make_federation",
    "remove_run_containers",
    "write_compose",
]

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "python:3.11-slim-bookworm"  # docker/Dockerfile's default BASE
LOCAL_BASE = "xcwado-base:bookworm"  # `make docker-base`
KEY_LABEL = "org.xcwado.key"  # what an image was built from: Dockerfile, base image, wheels, files
RUN_LABEL = "org.xcwado.run"  # the run directory a container belongs to
ROLE_LABEL = "org.xcwado.role"
WHEELHOUSE = ROOT / "build" / "docker" / "wheelhouse"
# nginx-light: the gateways' front (``xcwado up --runtime docker --front nginx``)
_BASE_PACKAGES = "python3,python3-venv,ca-certificates,nginx-light"
PACKAGES_LABEL = "org.xcwado.base.packages"  # what the base was made with; images built on it inherit it


class ContainerError(NcpError):
    """A container operation that cannot go on; the message says what to run to fix it."""


# -- the engine -------------------------------------------------------------------------------------------


def engine(timeout: int = 600) -> DockerClient:
    """A client of the Docker engine that answers, or a ContainerError saying how to start one."""
    try:
        docker = importlib.import_module("docker")
        errors = importlib.import_module("docker.errors")
    except ImportError:
        raise ContainerError(
            "the Python package `docker` is missing: pip install 'xcwado-testbed[docker]'"
        ) from None
    where = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = docker.from_env(timeout=timeout)
        client.ping()
    except errors.DockerException as exc:
        reason = _last_line(str(exc))
        raise ContainerError(
            f"no Docker engine answers at {where} ({reason}): start one with `sudo .ci/docker-setup`"
        ) from None
    return client


def _last_line(text: str, width: int = 200) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return (lines[-1] if lines else text.strip())[:width]


def _image(client: DockerClient, name: str) -> Any:
    errors = importlib.import_module("docker.errors")
    try:
        return client.images.get(name)
    except errors.ImageNotFound:
        return None


def _packages(image: Any) -> str:
    return str((image.labels or {}).get(PACKAGES_LABEL, ""))


def _has_nginx(image: Any) -> bool:
    return "nginx-light" in _packages(image).split(",")


def require_images(client: DockerClient, names: Sequence[str]) -> None:
    missing = [n for n in names if _image(client, n) is None]
    if missing:
        raise ContainerError(f"image {', '.join(missing)} is missing: build it with `make docker`")


# -- the base image -------------------------------------------------------------------------------------


def apt_mirror(suite: str = "bookworm", apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror the host's apt fetches ``suite`` from (one-line and deb822 sources)."""
    entries: list[tuple[list[str], list[str]]] = []  # (URIs, suites) of each "deb" source
    files = [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*.list"))]
    for path in files:
        for line in _read(path).splitlines():
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb":
                entries.append(([words[1]], [words[2]]))
    for path in sorted((apt_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", _read(path)):
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if line.strip().startswith("#") or ":" not in line:
                    continue
                key, _, value = line.partition(":")
                fields[key.strip().lower()] = value.strip()
            if "deb" in fields.get("types", "").split() and fields.get("enabled", "yes") != "no":
                entries.append((fields.get("uris", "").split(), fields.get("suites", "").split()))
    for uris, suites in entries:
        if suite in suites and uris:
            return uris[0]
    raise ContainerError(
        f"the host's apt has no source for Debian {suite} in {apt_dir}/sources.list(.d): "
        "pass the mirror with `python -m ncp.containers base --mirror URL`"
    )


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def build_base(
    client: DockerClient,
    *,
    tag: str = LOCAL_BASE,
    suite: str = "bookworm",
    mirror: str | None = None,
    force: bool = False,
    log: Path | None = None,
) -> BuildResult:
    """``debootstrap --variant=minbase`` a Debian with Python and nginx into a temporary folder, then
    ``docker import`` it as ``tag``. Needs root and debootstrap; an existing ``tag`` is kept unless ``force``
    or it was made with other packages (a base from before nginx was in it)."""
    existing = _image(client, tag)
    if existing is not None and not force and _packages(existing) == _BASE_PACKAGES:
        return BuildResult(tag, existing.id, 0.0, existing.attrs["Size"], reused=True)
    debootstrap = shutil.which("debootstrap") or shutil.which("debootstrap", path="/usr/sbin:/sbin")
    if debootstrap is None:
        raise ContainerError("debootstrap is missing: apt-get install debootstrap (or sudo .ci/docker-setup)")
    if os.geteuid() != 0:
        raise ContainerError("debootstrap needs root: sudo make docker-base")
    mirror = mirror or apt_mirror(suite)
    log = log or ROOT / "build" / "docker" / "base.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="xcwado-base-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        argv = [debootstrap, "--variant=minbase", f"--include={_BASE_PACKAGES}", suite, str(rootfs), mirror]
        with open(log, "w") as out:
            done = subprocess.run(argv, stdout=out, stderr=subprocess.STDOUT, check=False)
        if done.returncode != 0:
            raise ContainerError(
                f"debootstrap {suite} from {mirror} failed ({_last_line(log.read_text())}); see {log}"
            )
        for junk in ("var/cache/apt/archives", "var/lib/apt/lists", "usr/share/doc", "usr/share/man"):
            for child in (rootfs / junk).glob("*"):
                if child.name in ("lock", "partial"):
                    continue
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()
        archive = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(archive), "."], check=True)
        repository, _, version = tag.partition(":")
        changes = ["ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]', f"LABEL org.xcwado.base=debootstrap-{suite}"]
        changes.append(f"LABEL {PACKAGES_LABEL}={_BASE_PACKAGES}")
        client.api.import_image_from_file(
            str(archive), repository=repository, tag=version or "latest", changes=changes
        )
    image = client.images.get(tag)
    return BuildResult(tag, image.id, time.perf_counter() - started, image.attrs["Size"])


def resolve_base(client: DockerClient, base: str = "auto") -> str:
    """The base image to build on. ``auto``: the local debootstrap base, else the official Python image, if
    either is here. Nothing is pulled: a build must not depend on a registry being reachable."""
    candidates = [LOCAL_BASE, DEFAULT_BASE] if base == "auto" else [base]
    for name in candidates:
        if _image(client, name) is not None:
            return name
    wanted = "no base image" if base == "auto" else f"the base image {base} is not here"
    raise ContainerError(
        f"{wanted}: build one with `make docker-base` (debootstrap, no registry needed) "
        f"or `docker pull {DEFAULT_BASE}`"
    )


# -- the wheelhouse and the images ------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildResult:
    tag: str
    id: str
    seconds: float
    size: int  # bytes, the image with its base
    reused: bool = False

    def describe(self) -> str:
        what = "reused" if self.reused else f"built in {self.seconds:.1f} s"
        return f"{self.tag}: {what}, {self.size / 1e6:.0f} MB ({self.id.removeprefix('sha256:')[:12]})"


def build_wheelhouse(wheelhouse: Path = WHEELHOUSE, *, python: str = sys.executable) -> Path:
    """``pip wheel '.[load]'`` on the host: every wheel the image installs with ``--no-index``. The
    dependencies' wheels are made again only when the project's dependencies change."""
    if not (ROOT / "pyproject.toml").is_file():
        raise ContainerError(f"building images needs a source checkout (no pyproject.toml in {ROOT})")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    deps = json.dumps(
        [project.get("requires-python"), project["dependencies"], project["optional-dependencies"]["load"]]
    )
    deps_key = hashlib.sha256(deps.encode()).hexdigest()[:16]
    stamp = wheelhouse / ".dependencies"
    fresh = _read(stamp) != deps_key
    if fresh and wheelhouse.exists():
        shutil.rmtree(wheelhouse)
    wheelhouse.mkdir(parents=True, exist_ok=True)
    for old in wheelhouse.glob("xcwado_testbed-*.whl"):
        old.unlink()
    argv = [python, "-m", "pip", "wheel", "-q", "--disable-pip-version-check", "-w", str(wheelhouse)]
    argv += [f"{ROOT}[load]"] if fresh else ["--no-deps", str(ROOT)]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ContainerError(
            f"pip wheel failed ({_last_line(done.stderr or done.stdout)}): the wheelhouse is built on the "
            "host, which needs PyPI or a configured index once"
        )
    if fresh:
        stamp.write_text(deps_key)
    return wheelhouse


def wheel_digest(wheelhouse: Path) -> str:
    """A digest of the wheels' contents (their RECORDs), not of the zip files: rebuilding the project's wheel
    from the same sources gives the same digest."""
    wheels = sorted(wheelhouse.glob("*.whl"))
    if not any(w.name.startswith("xcwado_testbed-") for w in wheels):
        raise ContainerError(f"no wheelhouse at {wheelhouse} (no xcwado_testbed wheel): run `make docker`")
    digest = hashlib.sha256()
    for wheel in wheels:
        digest.update(wheel.name.encode())
        with zipfile.ZipFile(wheel) as zf:
            record = next((n for n in zf.namelist() if n.endswith(".dist-info/RECORD")), None)
            digest.update(zf.read(record) if record else wheel.read_bytes())
    return digest.hexdigest()


def _context(files: dict[str, Path | bytes]) -> io.BytesIO:
    """A build context as a tar: archive name -> a file, a folder (without caches) or bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, source in sorted(files.items()):
            if isinstance(source, bytes):
                info = tarfile.TarInfo(name)
                info.size = len(source)
                info.mode = 0o644
                tar.addfile(info, io.BytesIO(source))
                continue
            paths = [source] if source.is_file() else sorted(source.rglob("*"))
            for path in paths:
                if "__pycache__" in path.parts or path.suffix == ".pyc" or path.is_dir():
                    continue
                arcname = name if path == source else f"{name}/{path.relative_to(source).as_posix()}"
                info = tar.gettarinfo(str(path), arcname)
                info.uid = info.gid = 0
                info.uname = info.gname = ""
                info.mtime = 0
                with open(path, "rb") as f:
                    tar.addfile(info, f)
    buffer.seek(0)
    return buffer


def _digest(files: dict[str, Path | bytes], *extra: str) -> str:
    digest = hashlib.sha256()
    for value in extra:
        digest.update(value.encode())
    for name, source in sorted(files.items()):
        digest.update(name.encode())
        if isinstance(source, bytes):
            digest.update(source)
            continue
        for path in [source] if source.is_file() else sorted(source.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc":
                digest.update(path.relative_to(source.parent).as_posix().encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()


def build_image(
    client: DockerClient,
    tag: str,
    files: dict[str, Path | bytes],
    *,
    base: str,
    key_files: dict[str, Path | bytes] | None = None,
    key_parts: Sequence[str] = (),
    network: Literal["none", "host"] = "none",
    force: bool = False,
) -> BuildResult:
    """Build ``tag`` from a staged context (``files`` must hold ``Dockerfile``) on ``base``. An image of that
    tag with the same key (``key_files``, default ``files``; the base image's id; ``key_parts``) is reused."""
    base_image = client.images.get(base)
    key = _digest(files if key_files is None else key_files, base_image.id, *key_parts)
    existing = _image(client, tag)
    if existing is not None and existing.labels.get(KEY_LABEL) == key and not force:
        return BuildResult(tag, existing.id, 0.0, existing.attrs["Size"], reused=True)
    log = ROOT / "build" / "docker" / f"{tag.partition(':')[0]}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    error = None
    with open(log, "w") as out:
        stream = client.api.build(
            fileobj=_context(files),
            custom_context=True,
            tag=tag,
            buildargs={"BASE": base},
            labels={KEY_LABEL: key},
            network_mode=network,
            rm=True,
            forcerm=True,
            pull=False,
            decode=True,
        )
        for chunk in stream:
            if "stream" in chunk:
                out.write(chunk["stream"])
            if "error" in chunk:
                error = str(chunk["error"])
                out.write(error + "\n")
    _tidy(client, tag)
    if error is not None:
        raise ContainerError(f"docker build of {tag} failed ({_last_line(error)}); see {log}")
    image = client.images.get(tag)
    return BuildResult(tag, image.id, time.perf_counter() - started, image.attrs["Size"])


def _tidy(client: DockerClient, tag: str) -> None:
    """Leave tagged images only. The classic builder keeps a multi-stage build's earlier stage as an untagged
    image: the newest is tagged ``<repository>:<stage>`` (the next build's cache), older ones go, and so does
    the image the tag named before."""
    repository = tag.partition(":")[0]
    stages = client.images.list(filters={"dangling": True, "label": "org.xcwado.stage"})
    for image in sorted(stages, key=lambda i: str(i.attrs["Created"]), reverse=True)[:1]:
        image.tag(repository, image.labels["org.xcwado.stage"])
    for label in ("org.xcwado.stage", KEY_LABEL):
        client.images.prune(filters={"dangling": True, "label": label})


def build_images(
    client: DockerClient,
    *,
    base: str = "auto",
    wheelhouse: Path | None = None,
    orthanc: bool = True,
    force: bool = False,
) -> list[BuildResult]:
    """The testbed image (and the Orthanc image) on ``base`` from the wheelhouse; the wheelhouse is built
    first unless one is given."""
    base = resolve_base(client, base)
    wheelhouse = wheelhouse or build_wheelhouse()
    digest = wheel_digest(wheelhouse)
    files: dict[str, Path | bytes] = {
        "Dockerfile": ROOT / "docker" / "Dockerfile",
        "healthcheck.py": ROOT / "docker" / "healthcheck.py",
        "scenarios": ROOT / "scenarios",
        "loadtests": ROOT / "loadtests",
    }
    wheels: dict[str, Path | bytes] = {
        ("project" if w.name.startswith("xcwado_testbed-") else "wheelhouse") + f"/{w.name}": w
        for w in sorted(wheelhouse.glob("*.whl"))
    }
    # the wheels enter the key by their contents' digest, not by their zip files' bytes
    results = [
        build_image(
            client, IMAGE, files | wheels, base=base, key_files=files, key_parts=[digest], force=force
        )
    ]
    if orthanc:
        orthanc_files: dict[str, Path | bytes] = {
            "Dockerfile": ROOT / "docker" / "orthanc.Dockerfile",
            "orthanc-entrypoint.py": ROOT / "docker" / "orthanc-entrypoint.py",
            "healthcheck.py": ROOT / "docker" / "healthcheck.py",
        }
        results.append(
            build_image(client, ORTHANC_IMAGE, orthanc_files, base=base, network="host", force=force)
        )
    return results


# -- the federation as containers --------------------------------------------------------------------


def run_user(run_dir: Path, roles: Sequence[Role] = ()) -> str:
    """The user containers run as: the host's, so that files in the run directory stay the host user's, or
    the image's own when the host user is root (containers never run as root). Then the run directory and
    the folders the roles write (per country, the PKI) are given to that user."""
    uid, gid = os.getuid(), os.getgid()
    if uid != 0:
        return f"{uid}:{gid}"
    run_dir.mkdir(parents=True, exist_ok=True)
    owned = [run_dir / "pki", *(run_dir / r.country for r in roles if r.kind != "link")]
    os.chown(run_dir, CONTAINER_UID, CONTAINER_UID)
    for folder in owned:
        folder.mkdir(exist_ok=True)
        _give(folder, (CONTAINER_UID, CONTAINER_UID))
    return f"{CONTAINER_UID}:{CONTAINER_UID}"


def _front_folders(plan: Plan, owner: tuple[int, int] | None) -> None:
    """Each front's own folder and the sockets folder (:func:`ncp.gateway.front.private_socket_dir`), given
    to the containers' user before any container runs (a bind mount the engine makes is root's)."""
    if plan.sockets is None:
        return
    for role in plan.roles:
        if role.kind == "gateway":
            root = front_root(plan.run_dir, role.country)
            root.mkdir(parents=True, exist_ok=True)
            if owner is not None:
                _give(root, owner)
    private_socket_dir(plan.sockets, owner)


def _require_nginx(client: DockerClient, image: str) -> None:
    """The fronts run the image's nginx, which the local base has (:func:`build_base`)."""
    if not _has_nginx(_image(client, image)):
        raise FrontUnavailable(
            f"front 'nginx' in containers: the image {image} has no nginx (its base has no nginx-light, "
            f"as {LOCAL_BASE} has): make docker-base docker"
        )


def _run_owner(run_dir: Path) -> tuple[int, int] | None:
    """The containers' user (uid, gid) when this process, root, gives them what they write: the run folder's
    owner, as :func:`run_user` made it; else None (the containers run as this user)."""
    if os.getuid() != 0:
        return None
    owned = run_dir.stat()
    return owned.st_uid, owned.st_gid


def _give(folder: Path, owner: tuple[int, int]) -> None:
    """``folder`` and everything in it to ``owner`` (uid, gid), as root, following no link: a container of an
    earlier run may have left one there, naming any file of the host."""
    if folder.is_symlink():
        raise ContainerError(f"{folder} is a link, not a folder: remove it")
    for _, _, files, fd in os.fwalk(folder, follow_symlinks=False):  # each folder once, by its handle
        os.fchown(fd, *owner)
        for name in files:
            os.chown(name, *owner, dir_fd=fd, follow_symlinks=False)


def _shim(plan: Plan) -> Path | None:
    if not any(r.kind == "orthanc" for r in plan.roles):
        return None
    from ncp.orthanc import build_loopback_shim

    try:
        return build_loopback_shim(plan.run_dir / ".shim")
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        raise ContainerError(f"Orthanc on the host's network needs the loopback shim: {exc}") from None


def _run_name(run_dir: Path) -> str:
    return "xcwado-" + hashlib.sha1(str(run_dir).encode()).hexdigest()[:8]


def run_containers(client: DockerClient, run_dir: Path) -> list[Container]:
    """Every container (running or not) that belongs to ``run_dir`` (SDK runtime and compose alike)."""
    return list(client.containers.list(all=True, filters={"label": f"{RUN_LABEL}={run_dir.resolve()}"}))


def remove_run_containers(client: DockerClient, run_dir: Path) -> int:
    """Stop and remove the containers of ``run_dir`` (e.g. after ``kill -9`` of ``xcwado up``)."""
    found = run_containers(client, run_dir)
    for container in found:
        container.remove(force=True, v=True)
    return len(found)


class DockerFederation(Federation):
    """A federation whose roles are containers on the host's network (``xcwado up --runtime docker``).

    The plan, ports, PKI and state file are those of the process runtime (``make_plan`` on 127.0.0.1); the run
    directory and the topology file are mounted at their host paths. Stopping stops every container (SIGTERM,
    then SIGKILL after 10 s), writes its output to ``<run_dir>/logs/<role>.log`` and removes it."""

    def __init__(
        self,
        source: str,
        run_dir: Path,
        *,
        image: str = IMAGE,
        orthanc_image: str = ORTHANC_IMAGE,
        client: DockerClient | None = None,
        **options: Any,
    ) -> None:
        self.client = client or engine()
        self.image = image
        run_dir = run_dir.resolve()
        source = absolute_source(source)
        topology = load_source(source)
        orthanc = any(
            p.backend == "orthanc" for c in topology.countries.values() if not c.external for p in c.pacs
        )
        require_images(self.client, [image, *([orthanc_image] if orthanc else [])])
        if any(c.status == "running" for c in run_containers(self.client, run_dir)):
            raise ContainerError(
                f"containers of {run_dir} are running: stop them with "
                f"`python -m ncp.containers down --run-dir {run_dir}`"
            )
        remove_run_containers(self.client, run_dir)
        self.containers: dict[str, Container] = {}
        super().__init__(source, run_dir, mode="process", **options)
        self.name = _run_name(run_dir)
        self.user = run_user(run_dir, self.plan.roles)
        self.owner = _run_owner(run_dir)
        specs = role_containers(self.plan, image=image, orthanc_image=orthanc_image, shim=_shim(self.plan))
        self.specs = {spec.role: spec for spec in specs}  # a gateway's front under "<gateway>/front"
        taken = ports_taken(self.plan)
        if taken:
            role, port = taken[0]
            raise ContainerError(
                f"port {port} of {role} is taken on {self.plan.host} by another program: free it, start again"
            )

    def _require_front(self, front: Front) -> None:
        if front == "nginx":
            _require_nginx(self.client, self.image)

    def start(self, timeout: float = 120.0) -> None:
        """Every role's container at once (the engine serialises little of it), then the health checks."""
        self.plan.write(self.plan.run_dir / "plan.json")
        _front_folders(self.plan, self.owner)
        with ThreadPoolExecutor(max_workers=4) as pool:
            started = {role.id: pool.submit(self._start_role, role) for role in self.plan.roles}
        failed = None
        for role_id, future in started.items():
            try:
                self._roles[role_id] = future.result()
            except Exception as exc:
                failed = failed or exc
        if failed is not None:
            raise failed  # __enter__ stops the roles that started
        self.wait_healthy(timeout)
        for country, master in self.front_pids.items():  # as the process runtime has them, with the worker
            self.front_pids[country] = (*master, *process_children(master[0]))

    def _start_role(self, role: Role) -> ExitStack:
        stack = ExitStack()
        try:
            self.pids[role.id] = self._run(stack, self.specs[role.id])
            if (front := self.specs.get(f"{role.id}/front")) is not None:
                self.front_pids[role.country] = (self._run(stack, front),)
        except BaseException:
            stack.close()  # a container that never ran is removed here: nothing else holds it
            raise
        return stack

    def _run(self, stack: ExitStack, spec: ContainerSpec) -> int:
        """Start the container of ``spec``, removed when ``stack`` closes; its main process's pid."""
        container = self.client.containers.create(
            spec.image,
            command=spec.command or None,
            entrypoint=spec.entrypoint,
            name=f"{self.name}-{spec.name}",
            detach=True,
            network_mode="host",
            init=True,
            user=self.user,
            environment=spec.environment,
            volumes={path: {"bind": path, "mode": mode} for path, mode in spec.mounts.items()},
            labels={RUN_LABEL: str(self.plan.run_dir), ROLE_LABEL: spec.role},
        )
        self.containers[spec.role] = container
        stack.callback(self._remove, spec.role)
        container.start()
        return _main_pid(int(self.client.api.inspect_container(container.id)["State"]["Pid"]))

    def _remove(self, role_id: str) -> None:
        container = self.containers.pop(role_id, None)
        if container is None:
            return
        try:
            container.stop(timeout=10)
            self._save_logs(role_id, container)
        finally:
            container.remove(force=True, v=True)
            self.pids.pop(role_id, None)

    def _save_logs(self, role_id: str, container: Container) -> None:
        path = self.plan.run_dir / "logs" / (role_id.replace("/", "-") + ".log")
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "ab") as out:
            out.write(container.logs(stdout=True, stderr=True))

    def stop(self) -> None:
        # SIGTERM to every container at once: one by one, a federation's stop would take ~1 s per role
        running = list(self.containers.values())
        with ThreadPoolExecutor(max_workers=8) as pool:
            list(pool.map(lambda c: _quietly(c.stop, timeout=10), running))
        super().stop()

    def wait_healthy(self, timeout: float) -> None:
        """Every listener answers (as the process runtime checks); a container that exited instead fails
        at once, with its exit code and last line of output."""
        deadline = time.monotonic() + timeout
        while True:
            self.check_running()
            try:
                super().wait_healthy(min(2.0, max(0.1, deadline - time.monotonic())))
                return
            except NotHealthy:
                if time.monotonic() > deadline:
                    raise

    def check_running(self) -> None:
        for role_id, container in self.containers.items():
            container.reload()
            if container.status in ("exited", "dead"):
                code = container.attrs["State"]["ExitCode"]
                line = _last_line(container.logs(tail=20).decode(errors="replace") or "(no output)")
                raise ContainerError(f"container of {role_id} exited with {code}: {line}")

    def health(self) -> dict[str, str]:
        """Each role container's Docker health status (``healthy``, ``starting``, ...)."""
        out = {}
        for role_id, container in self.containers.items():
            container.reload()
            out[role_id] = container.attrs["State"].get("Health", {}).get("Status", container.status)
        return out


def _main_pid(init: int) -> int:
    """The role's own process (the container's init runs it), as the process runtime's ``pids`` name it."""
    try:
        children = Path(f"/proc/{init}/task/{init}/children").read_text().split()
    except OSError:
        return init
    return int(children[0]) if children else init


def _quietly(func: Any, *args: Any, **kwargs: Any) -> None:
    with contextlib.suppress(Exception):  # stopping what is already gone is not an error
        func(*args, **kwargs)


def make_federation(
    source: str, run_dir: Path, *, runtime: Literal["process", "docker"] = "process", **options: Any
) -> Federation:
    """The federation of ``xcwado up``: role processes, or role containers with ``runtime="docker"``."""
    if runtime == "docker":
        return DockerFederation(source, run_dir, **options)
    return Federation(source, run_dir, mode="process", **options)


# -- compose on the host's network ------------------------------------------------------------------


@dataclass(frozen=True)
class ComposeRun:
    project: str
    state: Path
    healthy_s: float  # `docker-compose up -d` until every role is healthy (compose waits before the seed)
    seeded_s: float  # until the seed wrote the state file


def write_compose(
    source: str, run_dir: Path, *, base_port: int | None = None, front: Front = "none"
) -> Path:
    """``xcwado compose --network host``: a host-network deployment of ``source`` in ``run_dir`` (its compose
    file, plan and, for Orthanc, the loopback shim), for the containers' user (:func:`run_user`); with
    ``front="nginx"``, each gateway behind its nginx front, a service of its own."""
    plan = host_plan(source, run_dir, base_port=base_port, front=front)
    user = run_user(plan.run_dir, plan.roles)
    _front_folders(plan, _run_owner(plan.run_dir))  # here too, so that docker-compose itself can start it
    return write_host_compose(plan, user=user, shim=_shim(plan))


def compose_project(run_dir: Path) -> str:
    return _run_name(run_dir.resolve())


def _compose(run_dir: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    compose = shutil.which("docker-compose")
    if compose is None:
        raise ContainerError(
            "docker-compose is missing: apt-get install docker-compose (or sudo .ci/docker-setup)"
        )
    file = run_dir / "compose.yaml"
    if not file.is_file():
        raise ContainerError(
            f"no compose file in {run_dir}: run `python -m ncp.containers compose --run-dir {run_dir}`"
        )
    argv = [compose, "--no-ansi", "-p", compose_project(run_dir), "-f", str(file), *args]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)


def compose_up(client: DockerClient, run_dir: Path, *, timeout: float = 300) -> ComposeRun:
    """``docker-compose up -d`` of a host-network deployment, after checking its images and ports; waits for
    the seed's state file. On any failure everything it started is taken down again."""
    run_dir = run_dir.resolve()
    plan = load_plan(run_dir)
    images = {IMAGE} | ({ORTHANC_IMAGE} if any(r.kind == "orthanc" for r in plan.roles) else set())
    require_images(client, sorted(images))
    if plan.sockets is not None:
        _require_nginx(client, IMAGE)
    taken = ports_taken(plan)
    if taken:
        role, port = taken[0]
        raise ContainerError(
            f"port {port} of {role} is taken on {plan.host}: free it, or pick new ports with "
            f"`python -m ncp.containers compose --run-dir {run_dir}`"
        )
    _front_folders(plan, _run_owner(run_dir))  # again: /tmp may have been cleared, or a down removed them
    state = run_dir / "state.json"
    state.unlink(missing_ok=True)
    started = time.perf_counter()
    try:
        up = _compose(run_dir, "up", "-d", timeout=timeout)
        healthy = time.perf_counter() - started
        if up.returncode != 0:
            raise ContainerError(f"docker-compose up failed: {_compose_error(client, run_dir, up.stderr)}")
        seed = _service_container(client, run_dir, "seed")
        code = seed.wait(timeout=max(10.0, timeout - healthy))["StatusCode"]
        if code != 0 or not state.is_file():
            line = _last_line(seed.logs(tail=20).decode(errors="replace") or "(no output)")
            raise ContainerError(f"the seed exited with {code}: {line}")
    except BaseException:
        compose_down(run_dir)
        raise
    return ComposeRun(compose_project(run_dir), state, healthy, time.perf_counter() - started)


def _service_container(client: DockerClient, run_dir: Path, service: str) -> Container:
    labels = [
        f"com.docker.compose.project={compose_project(run_dir)}",
        f"com.docker.compose.service={service}",
    ]
    found = client.containers.list(all=True, filters={"label": labels})
    if not found:
        raise ContainerError(f"docker-compose started no {service} container")
    return found[0]


def _compose_error(client: DockerClient, run_dir: Path, stderr: str) -> str:
    """The reason: a role container that exited says why better than compose's "is unhealthy"."""
    for container in run_containers(client, run_dir):
        container.reload()
        if container.status == "exited" and container.attrs["State"]["ExitCode"] != 0:
            role = container.labels.get(ROLE_LABEL, container.name)
            line = _last_line(container.logs(tail=20).decode(errors="replace") or "(no output)")
            return f"{role} exited with {container.attrs['State']['ExitCode']}: {line}"
    return _last_line(stderr)


def compose_down(run_dir: Path) -> None:
    """``docker-compose down`` (containers, and volumes if any) of a host-network deployment."""
    try:
        done = _compose(run_dir.resolve(), "down", "--volumes", "--remove-orphans", "--timeout", "10")
    finally:
        plan = run_dir / "plan.json"
        if plan.is_file() and (sockets := load_plan(run_dir.resolve()).sockets) is not None:
            shutil.rmtree(sockets, ignore_errors=True)
    if done.returncode != 0:
        raise ContainerError(f"docker-compose down failed: {_last_line(done.stderr)}")


# -- command line -------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m ncp.containers", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    base = sub.add_parser("base", help=f"build {LOCAL_BASE} with debootstrap (root)")
    base.add_argument("--tag", default=LOCAL_BASE)
    base.add_argument("--suite", default="bookworm")
    base.add_argument("--mirror", help="default: the mirror the host's apt uses for the suite")
    base.add_argument("--force", action="store_true", help="rebuild even if the tag exists")
    build = sub.add_parser("build", help="the wheelhouse, then the images (reused when unchanged)")
    build.add_argument("--base", default="auto", help=f"auto ({LOCAL_BASE} or {DEFAULT_BASE}) or an image")
    build.add_argument("--no-orthanc", action="store_true", help=f"skip {ORTHANC_IMAGE}")
    build.add_argument("--force", action="store_true")
    compose = sub.add_parser("compose", help="write a host-network compose deployment into --run-dir")
    compose.add_argument("--topology", default="docker/topology.toml")
    compose.add_argument("--run-dir", required=True)
    compose.add_argument(
        "--base-port", type=int, help="consecutive ports from this one (default: free ports)"
    )
    compose.add_argument(
        "--front", choices=["none", "nginx"], default="none", help="each gateway behind its nginx front"
    )
    for name in ("up", "down"):
        p = sub.add_parser(name, help=f"docker-compose {name} of the deployment in --run-dir")
        p.add_argument("--run-dir", required=True)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "compose":
            from ncp.cli import _source

            source, run_dir = _source(args.topology), Path(args.run_dir)
            compose = write_compose(source, run_dir, base_port=args.base_port, front=args.front)
            print(f"{compose}: start it with `python -m ncp.containers up --run-dir {args.run_dir}`")
            return 0
        client = engine()
        if args.command == "base":
            print(
                build_base(
                    client, tag=args.tag, suite=args.suite, mirror=args.mirror, force=args.force
                ).describe()
            )
        elif args.command == "build":
            started = time.perf_counter()
            wheelhouse = build_wheelhouse()
            print(f"wheelhouse {wheelhouse}: {time.perf_counter() - started:.1f} s")
            for result in build_images(
                client, base=args.base, wheelhouse=wheelhouse, orthanc=not args.no_orthanc, force=args.force
            ):
                print(result.describe())
        elif args.command == "up":
            run = compose_up(client, Path(args.run_dir))
            print(f"healthy in {run.healthy_s:.1f} s, seeded in {run.seeded_s:.1f} s; state file {run.state}")
            print(f"stop: python -m ncp.containers down --run-dir {args.run_dir}")
        elif args.command == "down":
            compose_down(Path(args.run_dir))
    except NcpError as exc:
        print(f"xcwado: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
