"""Caption embeddings computed once, ahead of pretraining, so training needs no text encoder.

A text-conditioned model reads its captions only through the frozen text encoder's output, so
the encoder can run beforehand, where it is installed (a GPU machine may lack the MiniLM
package). The file holds every distinct caption of the data, and the empty caption for
classifier-free guidance, exactly as ``encode_prompt`` produces them; a ``tokenizer/`` folder
beside it lets the trained model be exported in the usual layout.

    DIR/caption_embeddings.safetensors   embeddings (C, L, D), empty (1, L, D); captions in metadata
    DIR/tokenizer/                       the encoder's tokenizer
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from diffclust.errors import DiffclustError

FILE_NAME = "caption_embeddings.safetensors"


@dataclass
class CaptionTable:
    """Each distinct caption's text-encoder output, and the empty caption's."""

    captions: list[str]
    embeddings: torch.Tensor  # (C, L, D)
    empty: torch.Tensor  # (1, L, D)
    text_encoder: str  # "all-MiniLM-L6-v2" for the bundled encoder, else the folder it came from
    max_length: int

    def rows(self, captions: list[str]) -> torch.Tensor:
        """Index of each caption in the table; a caption the table lacks is an error naming it."""
        index = {caption: i for i, caption in enumerate(self.captions)}
        missing = sorted({caption for caption in captions if caption not in index})
        if missing:
            raise DiffclustError(
                f"{len(missing)} caption(s) of the data are not in the caption embeddings (first: '{missing[0]}'): "
                "recompute them for this data and template with `diffclust pretrain DATA --write-caption-embeddings DIR`."
            )
        return torch.tensor([index[caption] for caption in captions], dtype=torch.long)

    def save(self, folder: str | Path, tokenizer=None) -> Path:
        from diffclust.engine.checkpoint import atomic_save_tensors

        folder = Path(folder)
        metadata = {"captions": json.dumps(self.captions), "text_encoder": self.text_encoder, "max_length": str(self.max_length)}
        atomic_save_tensors(folder / FILE_NAME, {"embeddings": self.embeddings.half(), "empty": self.empty.half()}, metadata)
        if tokenizer is not None:
            tokenizer.save_pretrained(folder / "tokenizer")
        return folder

    @classmethod
    def load(cls, folder: str | Path) -> CaptionTable:
        from safetensors import safe_open

        path = Path(folder) / FILE_NAME
        if not path.is_file():
            raise DiffclustError(f"No {FILE_NAME} in '{folder}': write it with `diffclust pretrain DATA --write-caption-embeddings {folder}`.")
        try:
            with safe_open(str(path), framework="pt") as handle:
                metadata = handle.metadata() or {}
                embeddings, empty = handle.get_tensor("embeddings").float(), handle.get_tensor("empty").float()
            captions = json.loads(metadata["captions"])
            table = cls(captions, embeddings, empty, metadata["text_encoder"], int(metadata["max_length"]))
        except Exception as error:  # a truncated or foreign file: name it, never guess
            raise DiffclustError(f"'{path}' is damaged or not a caption-embeddings file ({type(error).__name__}: {error}); "
                                 "write it again with --write-caption-embeddings.") from None
        if embeddings.ndim != 3 or len(captions) != len(embeddings) or empty.shape != (1, *embeddings.shape[1:]):
            raise DiffclustError(f"'{path}' is inconsistent: {len(captions)} captions for embeddings of shape "
                                 f"{tuple(embeddings.shape)} and an empty caption of shape {tuple(empty.shape)}.")
        return table


def encode_captions(captions: list[str], encoder, tokenizer, max_length: int, name: str) -> CaptionTable:
    """The table for `captions` (deduplicated, sorted), through the same prompt encoding the
    backbone uses at clustering time."""
    from diffclust.backbones.stable_diffusion import StableDiffusionBackbone
    from diffclust.pretrain.architecture import build_scheduler
    from diffclust.pretrain.settings import PretrainSettings

    tokenizer.model_max_length = max_length
    prompts = StableDiffusionBackbone(None, encoder, tokenizer, build_scheduler(PretrainSettings()), reference=name)
    distinct = sorted(set(captions))
    empty = prompts.encode_prompt("", 1).embeddings
    embeddings = torch.cat([empty[:0]] + [prompts.encode_prompt(caption, 1).embeddings for caption in distinct])
    return CaptionTable(distinct, embeddings.float().cpu(), empty.float().cpu(), name, max_length)


def load_text_encoder(folder: str | None, max_length: int, show_progress: bool = True):
    """(encoder, tokenizer), frozen: from `folder`, else the bundled all-MiniLM-L6-v2."""
    from transformers import AutoModel, AutoTokenizer

    from diffclust.backbones.hub import library_progress_bars
    from diffclust.backbones.text_encoders import bundled_minilm_folder

    source = Path(folder) if folder else bundled_minilm_folder()
    try:
        with library_progress_bars(show_progress):
            encoder = AutoModel.from_pretrained(source, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=True)
    except OSError as error:
        raise DiffclustError(f"Could not load a text encoder and tokenizer from '{source}': {error}") from error
    tokenizer.model_max_length = max_length
    return encoder.eval().requires_grad_(False), tokenizer


def write_caption_embeddings(collection, template: str, out: str | Path, text_encoder: str | None = None,
                             max_length: int = 48, show_progress: bool = True) -> CaptionTable:
    """Every caption of `collection` (its caption column, else `template`) into `out`, for
    ``diffclust pretrain --caption-embeddings out`` on a machine without the encoder."""
    from diffclust.backbones.text_encoders import BUNDLED_MINILM
    from diffclust.pretrain.captions import caption_for

    encoder, tokenizer = load_text_encoder(text_encoder, max_length, show_progress)
    captions = [caption_for(record, template) for record in collection.records]
    table = encode_captions(captions, encoder, tokenizer, max_length, text_encoder or BUNDLED_MINILM)
    table.save(out, tokenizer)
    return table
