"""Build a CLIP model and tokenizer locally, for offline tests, benchmarks and the demo.

The Hugging Face hub is unreachable here, so tests build a small CLIP (or, for benchmarks, one of
the real ViT-B/32 size with random weights) and save it with ``save_pretrained``: promptlake
then loads it through the same ``from_pretrained(path)`` call as the real model.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer, models, pre_tokenizers, trainers

from promptlake.sample_data import sample_prompts

SPECIALS = ["<|startoftext|>", "<|endoftext|>"]


def train_clip_bpe(
    corpus: list[str], vocab_size: int
) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A byte-level BPE with CLIP's word-end suffix, trained on ``corpus``: (vocab, merges)."""
    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Whitespace(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        end_of_word_suffix="</w>",
        initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator([p.lower() for p in corpus], trainer)
    vocab = tok.get_vocab()
    for ch in alphabet:  # every byte must be spellable at a word's end too
        for piece in (ch, ch + "</w>"):
            vocab.setdefault(piece, len(vocab))
    merges = json.loads(tok.to_str())["model"]["merges"]
    return vocab, [tuple(m) if isinstance(m, list) else tuple(m.split(" ")) for m in merges]


def build_clip(
    path: str | Path,
    *,
    tiny: bool = True,
    vocab_size: int = 2000,
    image_size: int = 224,
    seed: int = 0,
) -> Path:
    """Save a CLIP model, tokenizer and image processor under ``path`` and return it.

    ``tiny=True``: a few layers of width 32 (tests). ``tiny=False``: transformers' default
    ``CLIPConfig`` — ViT-B/32 with a 512-d text tower — with random weights (benchmarks)."""
    import torch
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    path = Path(path)
    vocab, merges = train_clip_bpe(sample_prompts(3000, seed=seed), vocab_size)
    # transformers 5 takes merges as (a, b) pairs; its annotation still says strings
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges)  # type: ignore[arg-type]
    text = {
        "vocab_size": len(vocab),
        "bos_token_id": vocab[SPECIALS[0]],
        "eos_token_id": vocab[SPECIALS[1]],
        "pad_token_id": vocab[SPECIALS[1]],
    }
    if tiny:
        text |= {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
        }
        vision = {
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 2,
            "image_size": image_size,
            "patch_size": 32,
        }
        config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)
    else:
        config = CLIPConfig(text_config=text, vision_config={"image_size": image_size})
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(path)
    tokenizer.save_pretrained(path)
    CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
    ).save_pretrained(path)
    return path
