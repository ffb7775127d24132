"""What goes wrong with a model, importable without torch (the CLI checks a data dir's model
before it decides to load CLIP at all)."""


class ModelLoadError(RuntimeError):
    """The CLIP model could not be loaded; the message says how to point at a local copy."""
