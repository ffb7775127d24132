"""Stages: one module each, a plain function that does the work and a thin Prefect task."""
