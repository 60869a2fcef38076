"""Stable Diffusion 1.x (and any model in its folder layout) as a DiffusionBackbone.

The folder layout is diffusers': unet/, text_encoder/, tokenizer/, scheduler/ and, for latent
models, vae/. Pixel-space compact models simply have no vae/.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.utils.checkpoint
from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from transformers import AutoModel, AutoTokenizer, CLIPTextModel, PreTrainedModel

from diffclust.backbones.base import PLACEHOLDER, DiffusionBackbone, PromptEncoding, UNetPass, match_channels
from diffclust.backbones.capture import ActivationCapture, AttentionCapture
from diffclust.backbones.efficiency import enable_tf32
from diffclust.backbones.hub import require_unet_folder
from diffclust.backbones.names import BUILTIN_BACKBONES
from diffclust.backbones.noise import SchedulerNoiseMixin
from diffclust.backbones.text_encoders import referenced_folder, referenced_tokenizer
from diffclust.errors import BackboneNotFoundError, DiffclustError

logger = logging.getLogger(__name__)


def _load_text_encoder(source: str, **kwargs) -> PreTrainedModel:
    """The class named in text_encoder/config.json (CLIP for SD), a bundled encoder that
    text_encoder/ refers to, else whatever AutoModel finds."""
    folder = Path(source) / "text_encoder"
    bundled = referenced_folder(folder) if folder.is_dir() else None
    if bundled is not None:
        kwargs["local_files_only"] = True
        return AutoModel.from_pretrained(bundled, **kwargs)
    config_path = folder / "config.json"
    if not config_path.is_file():  # hub id: SD-1.x repositories use CLIP
        return CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kwargs)
    if "CLIPTextModel" in json.loads(config_path.read_text()).get("architectures", ["CLIPTextModel"]):
        return CLIPTextModel.from_pretrained(source, subfolder="text_encoder", **kwargs)
    return AutoModel.from_pretrained(source, subfolder="text_encoder", **kwargs)


def _load_tokenizer(source: str, **kwargs):
    """tokenizer/'s own files, or the bundled tokenizer it refers to."""
    folder = Path(source) / "tokenizer"
    bundled = referenced_tokenizer(folder) if folder.is_dir() else None
    return bundled if bundled is not None else AutoTokenizer.from_pretrained(source, subfolder="tokenizer", **kwargs)


class StableDiffusionBackbone(SchedulerNoiseMixin, DiffusionBackbone):
    """A frozen SD-1.x-layout model: UNet2DConditionModel, optional VAE, text encoder, tokenizer."""

    def __init__(self, unet, text_encoder, tokenizer, scheduler, vae=None, reference: str = "custom"):
        self.unet = unet
        self.text_encoder = text_encoder
        self.tokenizer = tokenizer
        self.scheduler = DDPMScheduler.from_config(scheduler.config)
        self.vae = vae
        self.reference = reference
        self._prompt_cache: dict[str, tuple[torch.Tensor, torch.Tensor, int, int | None]] = {}
        #: fixed prompts' encodings, by (prompt, text encoder dtype, device): see _fixed_prompt
        self._encoded_prompts: dict[tuple[str, torch.dtype, str], torch.Tensor] = {}
        self._use_attention_mask = not isinstance(text_encoder, CLIPTextModel)
        #: training-pass settings (prepare_training) and what finish_training restores
        self._training = None
        self._full_precision: dict[str, dict[str, torch.Tensor]] = {}
        self._compiled_unet = None
        self._text_attention: str | None = None  # the text encoder's attention while training swaps it
        self._attention_processors: dict = {}
        self.freeze()

    # ----------------------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        source: str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
        local_files_only: bool | None = None,
        reference: str | None = None,
    ) -> StableDiffusionBackbone:
        """Load from a local folder or a Hugging Face hub id (cached or downloadable)."""
        source = str(source)
        is_folder = Path(source).expanduser().is_dir()
        if is_folder:
            source = str(Path(source).expanduser())
            require_unet_folder(Path(source))
        kwargs = {"local_files_only": True} if (is_folder or local_files_only) else {}
        try:
            unet = UNet2DConditionModel.from_pretrained(source, subfolder="unet", torch_dtype=dtype, **kwargs)
            has_vae = (Path(source) / "vae").is_dir() if is_folder else True
            vae = AutoencoderKL.from_pretrained(source, subfolder="vae", torch_dtype=dtype, **kwargs) if has_vae else None
            text_encoder = _load_text_encoder(source, dtype=dtype, **kwargs)
            tokenizer = _load_tokenizer(source, **kwargs)
            scheduler = DDPMScheduler.from_pretrained(source, subfolder="scheduler", **kwargs)
        except (OSError, ValueError) as error:
            if is_folder:
                raise BackboneNotFoundError(f"Could not load the backbone folder '{source}': {error}") from error
            raise BackboneNotFoundError(
                f"Could not load backbone '{source}' from the Hugging Face hub, nor from its local cache "
                f"(no network here, or no such repository: {type(error).__name__}). Download it once on a machine "
                f"with network, e.g. `hf download {source} --local-dir sd15`, then pass "
                f"--backbone sd15 (a local folder works fully offline). Built-in backbones: {', '.join(BUILTIN_BACKBONES)}."
            ) from error
        backbone = cls(unet, text_encoder, tokenizer, scheduler, vae=vae, reference=reference or source)
        return backbone.to(device)

    def to(self, device: str | torch.device) -> StableDiffusionBackbone:
        for module in self._modules():
            module.to(device)
        self._prompt_cache.clear()
        return self

    def _modules(self) -> list[torch.nn.Module]:
        return [module for module in (self.unet, self.text_encoder, self.vae) if module is not None]

    def freeze(self) -> StableDiffusionBackbone:
        for module in self._modules():
            module.requires_grad_(False)
            module.eval()
        return self

    # ----------------------------------------------------------------------------- training passes
    def prepare_training(self, options) -> None:
        """Weights in `options.dtype` (the fp32 originals wait on the CPU for finish_training),
        UNet and text-encoder checkpointing, fused attention, channels_last, the VAE off the
        device, and optionally a compiled UNet. The cached constants were computed before, at
        full precision."""
        device = self.device
        self._attention_processors = self.unet.attn_processors
        self.unet.set_attn_processor(AttnProcessor2_0() if options.fused_attention else AttnProcessor())
        for name, module, dtype in (("unet", self.unet, options.dtype), ("text_encoder", self.text_encoder, options.text_dtype)):
            if module.dtype != dtype:
                self._full_precision[name] = {key: value.detach().to("cpu", copy=True) for key, value in module.state_dict().items()}
                module.to(dtype)
        if device.type == "cpu" and options.text_dtype != torch.float32 and hasattr(self.text_encoder, "set_attn_implementation"):
            # PyTorch's fused CPU attention runs its backward pass slowly at half precision (benchmarks/difc_digits.py
            # profile); a transformers without set_attn_implementation cannot switch a loaded model: correct, only slower
            self._text_attention = self.text_encoder.config._attn_implementation
            self.text_encoder.set_attn_implementation("eager")
        if options.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        if options.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if options.offload_vae and self.vae is not None and device.type != "cpu":
            self.vae.to("cpu")
        if options.tf32:
            enable_tf32(device)
        self._compiled_unet = torch.compile(self.unet) if options.compile_unet else None
        self._training = options

    def finish_training(self) -> None:
        if self._training is None:
            return
        device = self.device
        for name, state in self._full_precision.items():
            module = getattr(self, name)
            module.to(state[next(iter(state))].dtype)
            module.load_state_dict(state)
        self._full_precision.clear()
        self.unet.set_attn_processor(self._attention_processors)
        if self._text_attention is not None:
            self.text_encoder.set_attn_implementation(self._text_attention)
            self._text_attention = None
        if self._training.gradient_checkpointing:
            self.unet.disable_gradient_checkpointing()
        if self._training.channels_last:
            self.unet.to(memory_format=torch.contiguous_format)
        if self.vae is not None:
            self.vae.to(device)
        self._compiled_unet = None
        self._training = None

    # ----------------------------------------------------------------------------- geometry
    @property
    def vae_scale_factor(self) -> int:
        return 1 if self.vae is None else 2 ** (len(self.vae.config.block_out_channels) - 1)

    def denoiser(self) -> torch.nn.Module:
        return self.unet

    @property
    def resolution(self) -> int:
        return int(self.unet.config.sample_size) * self.vae_scale_factor

    @property
    def token_dim(self) -> int:
        return int(self.text_encoder.get_input_embeddings().embedding_dim)

    @property
    def device(self) -> torch.device:
        return next(iter(self._modules()[0].parameters())).device  # the UNet's, or the text encoder's when encoding captions alone

    @property
    def dtype(self) -> torch.dtype:
        return self.unet.dtype

    def latent_shape(self, resolution: int) -> tuple[int, int, int]:
        factor = self.vae_scale_factor
        if resolution % (factor * 2 ** (len(self.unet.config.block_out_channels) - 1)):
            step = factor * 2 ** (len(self.unet.config.block_out_channels) - 1)
            raise DiffclustError(f"Resolution {resolution} must be a multiple of {step} for this backbone.")
        return int(self.unet.config.in_channels), resolution // factor, resolution // factor

    # ----------------------------------------------------------------------------- diffusion
    @torch.no_grad()
    def encode_images(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.vae is None:
            return match_channels(pixels.to(self.device, self.dtype), int(self.unet.config.in_channels))
        # The posterior mean, not a sample: the cached latent must be the same on every read.
        latents = self.vae.encode(pixels.to(self.vae.device, self.vae.dtype)).latent_dist.mean
        return (latents * self.vae.config.scaling_factor).to(self.device)

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents -> images in [-1, 1] (the VAE's decoder; pixel-space models are their own images)."""
        if self.vae is None:
            latents = latents.to(self.device, self.dtype)
            images = latents[:, :3] if latents.shape[1] >= 3 else latents.expand(-1, 3, -1, -1)
        else:
            images = self.vae.decode(latents.to(self.vae.device, self.vae.dtype) / self.vae.config.scaling_factor).sample
        return images.float().clamp(-1, 1)

    # ----------------------------------------------------------------------------- text
    def _tokenize(self, prompt: str) -> tuple[torch.Tensor, torch.Tensor, int, int | None]:
        """Token ids for `prompt`, with one ordinary token standing where the placeholder is."""
        if prompt in self._prompt_cache:
            return self._prompt_cache[prompt]
        tokenizer = self.tokenizer
        max_length = min(int(tokenizer.model_max_length), int(self.text_encoder.config.max_position_embeddings))
        if prompt.count(PLACEHOLDER) > 1:
            raise DiffclustError(f"Prompt '{prompt}' has more than one {PLACEHOLDER} placeholder.")
        if PLACEHOLDER in prompt:
            prefix, suffix = prompt.split(PLACEHOLDER)
            prefix_ids = tokenizer(prefix.strip()).input_ids
            suffix_ids = tokenizer(suffix.strip(), add_special_tokens=False).input_ids
            stand_in = tokenizer("*", add_special_tokens=False).input_ids[:1] or [prefix_ids[-1]]
            ids = prefix_ids[:-1] + stand_in + suffix_ids + prefix_ids[-1:]
            placeholder_index = len(prefix_ids) - 1
        else:
            ids = tokenizer(prompt).input_ids
            placeholder_index = None
        if len(ids) > max_length:
            raise DiffclustError(f"Prompt '{prompt}' is {len(ids)} tokens long; this backbone takes {max_length} "
                                 "(for diffclust pretrain, raise --text-max-length).")
        end_index = len(ids) - 1
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else ids[-1]
        mask = [1] * len(ids) + [0] * (max_length - len(ids))
        ids = ids + [pad_id] * (max_length - len(ids))
        entry = (torch.tensor([ids]), torch.tensor([mask]), end_index, placeholder_index)
        self._prompt_cache[prompt] = entry
        return entry

    def encode_prompt(self, prompt: str, batch_size: int, proxy: torch.Tensor | None = None) -> PromptEncoding:
        ids, mask, end_index, placeholder_index = self._tokenize(prompt)
        if (proxy is None) != (placeholder_index is None):
            raise DiffclustError(
                f"Prompt '{prompt}' and proxy disagree: a proxy word needs exactly one {PLACEHOLDER} placeholder in the prompt."
            )
        if proxy is None:
            return PromptEncoding(self._fixed_prompt(prompt, ids, mask).expand(batch_size, -1, -1), end_index, None)
        ids = ids.to(self.device).expand(batch_size, -1)
        kwargs = {"attention_mask": mask.to(self.device).expand(batch_size, -1)} if self._use_attention_mask else {}

        def encode(word: torch.Tensor) -> torch.Tensor:
            # the hook lives inside the function, so a checkpointed recomputation splices again
            def splice(module, inputs, output):
                return torch.cat([output[:, :placeholder_index], word.to(output.dtype)[:, None, :], output[:, placeholder_index + 1 :]], dim=1)

            handle = self.text_encoder.get_input_embeddings().register_forward_hook(splice)
            try:
                return self.text_encoder(input_ids=ids, **kwargs)[0]
            finally:
                handle.remove()

        checkpointed = self._training is not None and self._training.gradient_checkpointing and torch.is_grad_enabled()
        hidden = torch.utils.checkpoint.checkpoint(encode, proxy, use_reentrant=False) if checkpointed else encode(proxy)
        return PromptEncoding(hidden, end_index, placeholder_index)

    def _fixed_prompt(self, prompt: str, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """A prompt without a proxy word, encoded once (one row) and kept: the frozen text encoder
        gives every row the same encoding, and encoding it for each row of every constants batch
        was half of their time on a small model (DiFiC's training step encodes proxy words, not this). Keyed by the encoder's
        dtype and device, which training set-up may change."""
        key = (prompt, self.text_encoder.dtype, str(self.device))
        if key not in self._encoded_prompts:
            kwargs = {"attention_mask": mask.to(self.device)} if self._use_attention_mask else {}
            with torch.no_grad():
                self._encoded_prompts[key] = self.text_encoder(input_ids=ids.to(self.device), **kwargs)[0]
        return self._encoded_prompts[key]

    # ----------------------------------------------------------------------------- UNet
    def run_unet(
        self,
        noisy: torch.Tensor,
        timesteps: torch.Tensor,
        prompt: PromptEncoding,
        capture: Sequence[str] = (),
        attention_token: int | None = None,
        stop_after_capture: bool = False,
    ) -> UNetPass:
        prediction = None
        timesteps = timesteps.to(self.device)
        context = prompt.embeddings.to(self.dtype)
        noisy = noisy.to(self.dtype)
        if self._training is not None and self._training.channels_last:
            noisy = noisy.contiguous(memory_format=torch.channels_last)
        unet = self._compiled_unet if self._compiled_unet is not None and not capture and attention_token is None else self.unet
        with ActivationCapture(self.unet, capture, stop_after_capture and bool(capture)) as activations:
            with AttentionCapture(self.unet, attention_token, tuple(noisy.shape[-2:])) as attention:
                prediction = unet(noisy, timesteps, encoder_hidden_states=context).sample
        return UNetPass(prediction, activations.outputs, attention.mean_map())
