"""`tiny-random`: a few-hundred-kB SD-1.x-shaped model with random weights, built in code.

It has SD-1.5's block layout (so module paths like ``up_blocks.2.attentions.0`` exist), a
VAE, a CLIP text encoder and a byte-level CLIP tokenizer, all tiny. It is written once to a
cache folder and then loaded through the ordinary folder loader, so a smoke test exercises
exactly the code path a real Stable Diffusion folder takes. It clusters nothing meaningful.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from transformers import AutoTokenizer, CLIPTextConfig, CLIPTextModel

from diffclust.backbones.names import TINY_RANDOM as NAME
from diffclust.errors import DiffclustError
from diffclust.home import building_in_home, cache_root

VERSION = 2
RESOLUTION = 64
TOKEN_DIM = 32


def _byte_alphabet() -> list[str]:
    """CLIP's printable stand-ins for the 256 byte values (as in GPT-2's byte-level BPE)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def _write_tokenizer(folder: Path) -> None:
    """A character-level CLIP tokenizer: every byte alone and at a word end, plus BOS/EOS."""
    folder.mkdir(parents=True)
    alphabet = _byte_alphabet()
    tokens = alphabet + [char + "</w>" for char in alphabet] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({token: index for index, token in enumerate(tokens)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": 77,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)


def build_tiny_random(folder: str | Path, seed: int = 0) -> Path:
    """Write the tiny SD-1.x-layout model to `folder` (deterministic for a given seed)."""
    folder = Path(folder)
    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        sample_size=RESOLUTION // 4,
        in_channels=4,
        out_channels=4,
        block_out_channels=(8, 8, 16, 16),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TOKEN_DIM,
        attention_head_dim=2,
        norm_num_groups=4,
    )
    vae = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(8, 8, 8),
        latent_channels=4,
        layers_per_block=1,
        norm_num_groups=4,
        sample_size=RESOLUTION,
    )
    _write_tokenizer(folder / "tokenizer")
    vocab_size = len(json.loads((folder / "tokenizer" / "vocab.json").read_text()))
    text_encoder = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=vocab_size,
            hidden_size=TOKEN_DIM,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            max_position_embeddings=77,
            bos_token_id=vocab_size - 2,
            eos_token_id=vocab_size - 1,
            pad_token_id=vocab_size - 1,
        )
    )
    scheduler = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)
    unet.save_pretrained(folder / "unet")
    vae.save_pretrained(folder / "vae")
    text_encoder.save_pretrained(folder / "text_encoder")
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline", "diffclust": NAME}))
    return folder


#: what a complete build holds (under torch.distributed, transformers writes the text encoder on rank 0 only)
REQUIRED_FILES = ("model_index.json", "unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                  "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json", "text_encoder/model.safetensors",
                  "tokenizer/vocab.json", "scheduler/scheduler_config.json")
#: how long a process that cannot write the model waits for the one that can
BUILD_WAIT_SECONDS = 600


def is_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in REQUIRED_FILES)


def ensure_tiny_random() -> Path:
    """Build the tiny model once into the cache (atomically: temp folder, then rename).

    Several processes may build at once (torchrun): the first complete build is renamed into
    place; a process whose build is incomplete (a non-zero rank, for which transformers skips the
    text encoder's files) waits for it. An incomplete copy left by an earlier version is rebuilt.
    """
    target = cache_root() / "backbones" / f"{NAME}-v{VERSION}"
    if is_complete(target):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=target.parent))
    try:
        with building_in_home(f"the built-in '{NAME}' backbone", target.parent):
            build_tiny_random(staging / "model")
        if is_complete(staging / "model"):
            if target.exists() and not is_complete(target):
                shutil.rmtree(target, ignore_errors=True)  # a broken copy: replace it
            try:
                os.replace(staging / "model", target)
            except OSError:  # another process won the race; its copy is identical
                if not is_complete(target):
                    raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    deadline = time.monotonic() + BUILD_WAIT_SECONDS
    while not is_complete(target):
        if time.monotonic() > deadline:
            raise DiffclustError(f"The built-in '{NAME}' backbone in {target} is incomplete and no process finished building it "
                                 f"within {BUILD_WAIT_SECONDS} s. Delete {target} and run once in a single process.")
        time.sleep(0.5)
    return target
