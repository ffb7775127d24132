"""Search, refine, the LLM client, feedback and image generation."""
