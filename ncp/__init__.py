"""Cross-border imaging exchange testbed: simulated NCPs, MHD, KOS manifests and XC-WADO."""
