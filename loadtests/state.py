"""The federation a load test drives: the state file of ``xcwado up`` as ``ncp.state`` reads it
(docs/state-file.md, contract), under the load tests' own names.

Pure module (no ``locust`` import): the runner, the summary and pytest may import it. ``ncp.state`` checks
every UID taken from the file (PS3.5 9.1) before it can reach a URL path, and every base URL comes from the
file's ``countries``: a load test never follows a host it was not given.
"""

from __future__ import annotations

from ncp.state import STATE_ENV, FederationState, TokenRecipe, load_state
from ncp.state import CountryState as Country
from ncp.state import PatientEntry as Patient
from ncp.state import SeriesEntry as Series
from ncp.state import StateFileError as StateError
from ncp.state import StudyEntry as Study

__all__ = [
    "STATE_ENV",
    "TREATMENT_ENV",
    "Country",
    "FederationState",
    "Patient",
    "Series",
    "StateError",
    "Study",
    "TokenRecipe",
    "load_state",
]

TREATMENT_ENV = "XCWADO_TREATMENT"
