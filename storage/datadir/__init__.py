"""The data directory's files: where each stage keeps its output and how it is written
atomically (``layout``), the plan's shard files and row index (``planfiles``), completion
markers (``markers``), typed records between stages (``records``), per-shard vectors
(``vectors``), the LMDB image cache (``image_cache``), runs in progress (``activity``) and what
``status`` reports (``status``). Imports ``storage.store`` only for its URLs and turn files."""
