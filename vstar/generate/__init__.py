"""Answer generation and label rationalization: prompts, backends (transformers, vLLM), the Ray Data stage."""
