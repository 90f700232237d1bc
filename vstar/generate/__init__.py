"""Answer generation and label rationalization: prompts, sampling, backends (transformers, vLLM), the Ray Data stage."""
