"""promptlake: a searchable, self-improving store of AI-image prompts."""

__version__ = "0.1.0"
