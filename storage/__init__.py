"""Storage: what promptlake keeps, and nothing about how it is orchestrated.

``store``: the vector store (chDB embedded or a ClickHouse/MyScale server, chosen by URL), its
SQL dialects, k-NN planning and the turns processes take on an embedded store.
``datadir``: the data directory's files: layout and atomic writes, the plan's files, markers,
per-shard vectors, the LMDB image cache, runs in progress and ``status``.

May import: ``promptlake.settings`` and libraries only. Never Prefect, ``promptlake.tasks``,
``promptlake.flows``, ``promptlake.deployments`` or ``promptlake.ui``: checked by ``make lint``
(import-linter, pyproject.toml).
"""
