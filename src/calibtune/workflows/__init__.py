"""Workflows: each builds on the library and writes one run folder (what the CLI commands run)."""
