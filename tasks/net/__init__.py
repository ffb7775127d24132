"""Talking to other hosts: image downloads with timeouts, size limits, per-host caps and
breakers, and the one retry rule (backoff with ``Retry-After``). No Prefect."""
