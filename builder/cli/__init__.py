"""Command-line entry points: kiln-build and kiln-registry (common.py is the one exit point)."""
