"""Storage: shard files, completion markers, the LMDB image cache. Never imports Prefect."""
