"""Prefect flows: they wire stages together; the work lives in tasks/."""
