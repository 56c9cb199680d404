"""registry role."""
