"""Topologies shipped with the testbed (TOML files beside this module)."""
