"""The shard stages' own work: fetch (and its hosts), the image cache, embed and its devices."""
