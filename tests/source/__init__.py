"""The source: download, Kaggle, planning and incremental re-planning."""
