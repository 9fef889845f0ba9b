"""Prefect flows and the CLI: orchestration only. Every task wraps one call into :mod:`monitors`."""
