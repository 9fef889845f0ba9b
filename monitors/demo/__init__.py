"""Simulated streams, demo models and shipped corpora: only the demo flows import this."""
