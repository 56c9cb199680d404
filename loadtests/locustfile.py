"""Locust load tests of cross-border image retrieval (XC-WADO, RAD-160) across NCPs.

Run against a federation started by ``xcwado up --state run/state.json``::

    locust -f loadtests/locustfile.py --state run/state.json --headless -u 4 -r 2 -t 30s ClinicianUser

or, bounded and summarised (profiles, thresholds, plots, distributed workers)::

    python loadtests/run.py --state run/state.json --profile ramp --users 8 --duration 60

Users: ClinicianUser (the three steps, verified), InstanceRetriever, StudyRetriever (XC-WADO),
ViewerUser / ViewerInstancesUser (a viewer opening a series: metadata, then images 16 at a time) and
DirectPacsUser (the PACS itself, the baseline). Never import this folder from ``ncp`` or from the
pytest process: ``import locust`` monkey-patches the interpreter with gevent.
"""

from __future__ import annotations

import hooks  # noqa: F401  (registers the options and listeners)
from users import (
    ClinicianUser,
    DirectPacsUser,
    InstanceRetriever,
    StudyRetriever,
    ViewerInstancesUser,
    ViewerUser,
)

__all__ = [
    "ClinicianUser",
    "DirectPacsUser",
    "InstanceRetriever",
    "StudyRetriever",
    "ViewerInstancesUser",
    "ViewerUser",
]
