"""gateway role."""
