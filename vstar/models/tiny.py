"""Tiny random-weight VLMs built offline, for tests and the embedded demo.

    >>> build_tiny_vlm("models/tiny")                                   # doctest: +SKIP
    PosixPath('models/tiny')

The folder is complete and ordinary: a byte-level BPE tokenizer trained in-process with the family's
special tokens and chat template, the image and video processors, a config and random weights. It is
loaded by the same code as a real checkpoint (`vstar.models.load_vlm`). head_dim is 32 so vLLM's CPU
backend can load it too. Qwen2.5-VL is the default family (DESIGN.md §5); Qwen2-VL is one flag away.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from vstar.models.video_processor import NumpyQwen2VLVideoProcessor, install_fallback, torchvision_available

Family = Literal["qwen2_vl", "qwen2_5_vl"]

SPECIAL_TOKENS = [  # the Qwen2-VL set, in the order of the real vocabulary's added tokens
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
]

# The structure of the official Qwen2-VL / Qwen2.5-VL chat template.
CHAT_TEMPLATE = (
    "{% set image_count = namespace(value=0) %}{% set video_count = namespace(value=0) %}"
    "{% for message in messages %}{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "{% set image_count.value = image_count.value + 1 %}"
    "{% if add_vision_id %}Picture {{ image_count.value }}: {% endif %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}"
    "{% set video_count.value = video_count.value + 1 %}"
    "{% if add_vision_id %}Video {{ video_count.value }}: {% endif %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Words the tokenizer learns as whole tokens: questions, step-by-step answers and synthetic labels.
CORPUS_WORDS = [
    "the",
    "a",
    "an",
    "is",
    "are",
    "was",
    "what",
    "where",
    "when",
    "who",
    "how",
    "many",
    "which",
    "video",
    "shows",
    "shape",
    "object",
    "objects",
    "first",
    "last",
    "red",
    "green",
    "blue",
    "yellow",
    "magenta",
    "cyan",
    "circle",
    "square",
    "triangle",
    "moves",
    "moving",
    "left",
    "right",
    "up",
    "down",
    "top",
    "bottom",
    "answer",
    "question",
    "yes",
    "no",
    "because",
    "so",
    "then",
    "after",
    "before",
    "finally",
    "count",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "visible",
    "appears",
    "disappears",
    "from",
    "to",
    "between",
    "of",
    "at",
    "box",
    "order",
    "sequence",
    "time",
    "second",
    "frame",
    "step",
    "explain",
    "label",
    "action",
    "color",
    "direction",
    "therefore",
    "see",
    "in",
    "on",
    "and",
    "it",
    "this",
    "there",
    "score",
    "difficulty",
    "dive",
    "person",
]

# A video processor size that keeps 112×112 frames as they are (4 to 64 merged 28×28 patches per frame).
MIN_PIXELS, MAX_PIXELS = 28 * 28 * 4, 28 * 28 * 64


def _product_text() -> list[str]:
    """The text vstar itself sends: the chat template's own words, every question bank under every framing,
    the generation prompts and answers in their format, so each common word is one token (a tiny model's
    sequences stay short)."""
    from vstar.data.questions import FRAMINGS, TASK_BANKS, TYPE_BANKS
    from vstar.generate.prompts import RATIONALE, STEP_BY_STEP

    fields = dict(subject="the red circle", name="action", about=" of the person", at="0.50")
    fields.update(about_q="the red circle", about_q_lower="the red circle")
    cores = [q for bank in (*TASK_BANKS.values(), *TYPE_BANKS.values()) for q in bank]
    lines = [STEP_BY_STEP, RATIONALE]
    lines += [framing.format(q=core.format(**fields)) for core in cores for framing in FRAMINGS]
    return lines


def _corpus(n_lines: int = 3000, seed: int = 0):
    rng = np.random.default_rng(seed)
    product = _product_text()
    for _ in range(n_lines):
        line = " ".join(rng.choice(CORPUS_WORDS, size=int(rng.integers(4, 16))))
        if rng.random() < 0.4:
            line += f" {rng.integers(0, 100)}.{rng.integers(0, 100)} [0.{rng.integers(0, 99)}, 0.{rng.integers(0, 99)}]"
        yield line.capitalize() + ("?" if rng.random() < 0.3 else ".")
        question = product[int(rng.integers(len(product)))]
        yield f"system\nYou are a helpful assistant.\nuser\n{question}\nassistant\nThe video shows {line.lower()}"


def build_tokenizer(vocab_size: int = 1024):
    """Byte-level BPE (any text round-trips) with the Qwen special tokens (ids 0..13) and chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=SPECIAL_TOKENS[1:],
        model_max_length=8192,
        padding_side="left",  # batched generation with a decoder-only model
        chat_template=CHAT_TEMPLATE,
    )


def build_processor(tokenizer, family: Family):
    from transformers import Qwen2_5_VLProcessor, Qwen2VLProcessor
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    install_fallback()
    size = {"shortest_edge": MIN_PIXELS, "longest_edge": MAX_PIXELS}
    if torchvision_available():
        from transformers import Qwen2VLVideoProcessor

        video_processor = Qwen2VLVideoProcessor(size=size)
    else:
        video_processor = NumpyQwen2VLVideoProcessor(size=size)
    cls = Qwen2_5_VLProcessor if family == "qwen2_5_vl" else Qwen2VLProcessor
    return cls(
        image_processor=Qwen2VLImageProcessorPil(size=size),
        tokenizer=tokenizer,
        video_processor=video_processor,
        chat_template=tokenizer.chat_template,
    )


def build_config(
    tokenizer,
    family: Family,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int = 1,
    vision_width: int = 32,
    vision_depth: int = 2,
):
    from transformers import Qwen2_5_VLConfig, Qwen2VLConfig

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    half = hidden // heads // 2
    mrope = [half - 2 * (half // 3), half // 3, half // 3]  # (t, h, w) sections, summing to head_dim / 2
    text = dict(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=8192,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": mrope},
        bos_token_id=ids["<|endoftext|>"],
        eos_token_id=ids["<|im_end|>"],
        pad_token_id=ids["<|endoftext|>"],
    )
    tokens = dict(
        image_token_id=ids["<|image_pad|>"],
        video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"],
        vision_end_token_id=ids["<|vision_end|>"],
    )
    if family == "qwen2_5_vl":  # vision `hidden_size` is its width, `out_hidden_size` the text width
        vision = dict(
            depth=vision_depth,
            hidden_size=vision_width,
            intermediate_size=2 * vision_width,
            num_heads=2,
            out_hidden_size=hidden,
            patch_size=14,
            spatial_merge_size=2,
            temporal_patch_size=2,
            window_size=112,
            fullatt_block_indexes=[vision_depth - 1],
            tokens_per_second=2,
        )
        return Qwen2_5_VLConfig(text_config=text, vision_config=vision, **tokens)
    # Qwen2-VL: vision `embed_dim` is its width, `hidden_size` the merger output (= text width)
    vision = dict(
        depth=vision_depth,
        embed_dim=vision_width,
        hidden_size=hidden,
        num_heads=2,
        mlp_ratio=2,
        patch_size=14,
        spatial_merge_size=2,
        temporal_patch_size=2,
    )
    return Qwen2VLConfig(text_config=text, vision_config=vision, **tokens)


def tiny_config_kwargs(width: int) -> dict:
    """`build_config` sizes for a text width: heads of 32 (vLLM's CPU backend), half as many KV heads, a vision
    tower half as wide. Width 64 gives the defaults."""
    heads = width // 32
    return dict(hidden=width, heads=heads, kv_heads=max(1, heads // 2), vision_width=width // 2)


def build_tiny_vlm(out_dir: str | os.PathLike, family: Family = "qwen2_5_vl", seed: int = 0, **config_kwargs) -> Path:
    """Write a complete tiny VLM folder (tokenizer, processors, config, random weights) to `out_dir`.

    Written to a temporary folder beside `out_dir` and renamed into place, so a folder that
    exists is complete. Deterministic by seed.
    """
    from transformers import AutoModelForImageTextToText

    out_dir = Path(out_dir)
    tokenizer = build_tokenizer()
    processor = build_processor(tokenizer, family)
    config = build_config(tokenizer, family, **config_kwargs)
    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    for key in ("bos_token_id", "eos_token_id", "pad_token_id"):  # generate() reads them here, not in the config
        setattr(model.generation_config, key, getattr(config.text_config, key))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}-", dir=out_dir.parent))
    tmp.chmod(0o755)  # a model folder others may read, as mkdir would make it (mkdtemp's is 0700)
    try:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        if out_dir.exists():
            shutil.rmtree(out_dir)
        tmp.rename(out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out_dir
