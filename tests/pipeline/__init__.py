"""Whole ingests: the flow, resume, orchestration, flat memory, Ctrl-C."""
