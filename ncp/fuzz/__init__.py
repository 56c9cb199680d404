"""The project's fuzz suite (issue 11, "no 5xx from input, anywhere"): docs/fuzz.md.

:mod:`~ncp.fuzz.corpus` takes valid requests from a seeded federation, :mod:`~ncp.fuzz.mutate` makes them
hostile (seeded), :mod:`~ncp.fuzz.wire` sends them as raw bytes, :mod:`~ncp.fuzz.oracle` judges the answers
and the federation afterwards, :mod:`~ncp.fuzz.runner` ties them together; ``python -m ncp.fuzz`` runs it.
"""
