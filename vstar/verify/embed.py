"""Optional embedding similarity for text labels: a transformers encoder loaded from a path, mean-pooled.

embed = load_embedder("models/all-MiniLM-L6-v2")      # verify.text_embedding_model in the config
a, b = embed(["the person took the cup", "Took the cup."])
float(a @ b)                                            # cosine similarity, the vectors are unit length
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=2)  # loaded once per process (a Ray worker keeps it across batches)
def load_embedder(path: str):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()

    @torch.inference_mode()
    def embed(texts: list[str]) -> np.ndarray:
        enc = tokenizer(texts, padding=True, truncation=True, max_length=256, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
        return torch.nn.functional.normalize(pooled, dim=-1).numpy()

    return embed
