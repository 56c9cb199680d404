"""Seeded federations for the end-to-end specifications (imported by conftest and the tests)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ncp.federation import Federation
from ncp.model import StudyRecord
from ncp.publish import Published, seed_federation


@dataclass(repr=False)  # hypothesis prints its arguments: a whole catalogue would be noise
class Seeded:
    fed: Federation
    published: dict[str, Published]

    def __repr__(self) -> str:
        return f"Seeded({self.fed.plan.run_dir})"

    def gateway(self, code: str) -> str:
        return self.fed.plan.endpoints[code].gateway

    def hcid(self, code: str) -> str:
        return self.fed.topology.country(code).home_community_id


def start_seeded(
    source: str, run_dir: Path, encoding: str | None = None, *, secure: bool = False
) -> Iterator[Seeded]:
    """Functional specifications run with security off; tests/e2e/test_security.py turns it on."""
    with Federation(source, run_dir, mode="thread", secure=secure) as fed:
        published = asyncio.run(seed_federation(fed.topology, fed.plan.endpoints, encoding=encoding))  # type: ignore[arg-type]
        yield Seeded(fed, published)


def study_resource(study: StudyRecord, level: str) -> str:
    """``studies/...`` of ``study`` at one RAD-160 level: study, series, instance, metadata or rendered."""
    series = study.series[0]
    base = f"studies/{study.study_instance_uid}"
    instance = f"{base}/series/{series.series_instance_uid}/instances/{series.instances[0].sop_instance_uid}"
    return {
        "study": base,
        "series": f"{base}/series/{series.series_instance_uid}",
        "instance": instance,
        "metadata": f"{base}/metadata",
        "rendered": f"{instance}/rendered",
    }[level]
