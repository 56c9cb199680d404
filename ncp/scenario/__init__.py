"""Scenario catalogue runner and conformance reports (console, JUnit XML, JSON, HTML + MCWG dashboard)."""

from __future__ import annotations

from ncp.scenario.model import Check, Result, Scenario, Step, scenario
from ncp.scenario.runner import list_scenarios, load_scenarios, run_scenarios

__all__ = [
    "Check",
    "Result",
    "Scenario",
    "Step",
    "list_scenarios",
    "load_scenarios",
    "run_scenarios",
    "scenario",
]
