"""synth role."""
