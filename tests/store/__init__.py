"""The vector store: its contract, turns between processes, concurrent users."""
