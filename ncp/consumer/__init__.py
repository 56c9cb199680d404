"""consumer role."""
