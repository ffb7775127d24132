"""The work, by concern.

At this level, one module per stage, each named as the stage is everywhere (marker folder,
Prefect task, CLI word): ``download``, ``plan``, ``fetch``, ``embed``, ``load``, ``index`` (the
ingest), ``search``, ``refine`` and ``feedback``. Each holds the stage's plain function (or calls
it from a sub-package) and its thin Prefect task.

The sub-packages hold what the stages use, as plain functions and classes with no Prefect task:
``source`` (reading a source's rows), ``net`` (HTTP with limits, breakers and retries),
``images`` (decoding, thumbnails, generators), ``clip`` (the model and its devices),
``metadata`` (what generated images carry), ``query`` (search and refine without Prefect, for
the CLI and the page) and ``runtime`` (stop requests, the store's turn).

May import: ``promptlake.storage``, ``promptlake.settings`` and libraries. Never
``promptlake.flows``, ``promptlake.deployments`` or the CLI and page (``promptlake.ui``,
``promptlake.cli``): checked by ``make lint`` (import-linter, pyproject.toml).
"""
