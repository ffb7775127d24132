"""The search page: its API, the page in Chromium, results in the Prefect UI."""
