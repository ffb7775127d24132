"""A tiny Stable Diffusion pipeline with random weights, built from configs for offline tests.

Saved with ``save_pretrained`` as a StableDiffusionPipeline folder, so promptlake loads it
through the same ``AutoPipelineForText2Image.from_pretrained(path)`` call as a real model. The
tokenizer is the one ``promptlake.tiny_clip`` trains; everything is a few channels wide and
makes a 64x64 image in a second or two on a CPU.
"""

from __future__ import annotations

from pathlib import Path


def build_sd(path: str | Path, tokenizer_dir: str | Path, seed: int = 0) -> Path:
    """Save a text-to-image pipeline (UNet, VAE, CLIP text encoder, tokenizer, scheduler)."""
    import torch
    from diffusers import (
        AutoencoderKL,
        EulerDiscreteScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tokenizer_dir, model_max_length=77)  # SD pads to this
    torch.manual_seed(seed)
    text = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=len(tok),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
    )
    unet = UNet2DConditionModel(
        sample_size=32,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32,  # the text encoder's width
        attention_head_dim=8,
        norm_num_groups=8,
    )
    vae = AutoencoderKL(
        block_out_channels=(16, 32),  # two blocks: latents are half the image size
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        latent_channels=4,
        norm_num_groups=8,
        sample_size=64,
    )
    pipe = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text,
        tokenizer=tok,
        unet=unet,
        scheduler=EulerDiscreteScheduler(steps_offset=1),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(path)
    return Path(path)
