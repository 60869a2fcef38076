"""Hooks that read a UNet while it runs: named activations and cross-attention maps."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention

from diffclust.errors import DiffclustError


class StopForward(Exception):
    """Raised inside a hook once every requested activation is in hand, to skip the rest of the UNet."""


def _first_tensor(output) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if hasattr(output, "sample"):
        return output.sample
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"Cannot read a tensor from a module output of type {type(output).__name__}")


_BLOCK_PATTERN = re.compile(r"^(?:(?:down|up)_blocks\.\d+|mid_block)(?:\.(?:attentions|resnets|downsamplers|upsamplers)\.\d+)?$")


def capturable_layers(model: torch.nn.Module) -> list[str]:
    """Module paths worth capturing (whole blocks and their numbered sub-modules), in run order."""
    return [name for name, _ in model.named_modules() if _BLOCK_PATTERN.match(name)]


class ActivationCapture:
    """Context manager: record the output of each named module during one forward pass."""

    def __init__(self, model: torch.nn.Module, names: Sequence[str], stop_after_capture: bool = False):
        self.model = model
        self.names = list(names)
        self.stop_after_capture = stop_after_capture
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _hook(self, name: str):
        def record(module, inputs, output):
            self.outputs[name] = _first_tensor(output)
            if self.stop_after_capture and len(self.outputs) == len(self.names):
                raise StopForward

        return record

    def __enter__(self) -> ActivationCapture:
        for name in self.names:
            try:
                module = self.model.get_submodule(name)
            except AttributeError:
                known = ", ".join(capturable_layers(self.model))
                raise DiffclustError(f"The UNet has no module '{name}'. Known blocks: {known}") from None
            self._handles.append(module.register_forward_hook(self._hook(name)))
        return self

    def __exit__(self, *exc) -> bool:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        return exc[0] is StopForward


class TokenAttentionRecorder:
    """Attention processor for cross-attention layers that also keeps one token's attention map.

    The computation is the classic explicit one (softmax(QK^T) V) so the probabilities exist;
    each layer's map is averaged over heads, resized to the latent size and summed.
    """

    def __init__(self, token_index: int, latent_size: tuple[int, int]):
        self.token_index = token_index
        self.latent_size = latent_size
        self.total: torch.Tensor | None = None
        self.layers = 0

    def _record(self, probs: torch.Tensor, heads: int) -> None:
        batch_heads, queries, _ = probs.shape
        token_map = probs[:, :, self.token_index].reshape(batch_heads // heads, heads, queries).mean(dim=1)
        height, width = self.latent_size
        factor = (height * width / queries) ** 0.5
        map_h, map_w = round(height / factor), round(width / factor)
        token_map = token_map.reshape(-1, 1, map_h, map_w).float()
        if (map_h, map_w) != (height, width):
            token_map = F.interpolate(token_map, size=(height, width), mode="bilinear", align_corners=False)
        token_map = token_map[:, 0]
        self.total = token_map if self.total is None else self.total + token_map
        self.layers += 1

    def mean_map(self) -> torch.Tensor | None:
        return None if self.total is None else self.total / self.layers

    def __call__(self, attn: Attention, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)
        input_ndim = hidden_states.ndim
        if input_ndim == 4:
            batch, channel, height, width = hidden_states.shape
            hidden_states = hidden_states.view(batch, channel, height * width).transpose(1, 2)
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        attention_mask = attn.prepare_attention_mask(attention_mask, context.shape[1], context.shape[0])
        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)
        query = attn.head_to_batch_dim(attn.to_q(hidden_states))
        if encoder_hidden_states is not None and attn.norm_cross:
            context = attn.norm_encoder_hidden_states(context)
        key = attn.head_to_batch_dim(attn.to_k(context))
        value = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(query, key, attention_mask)
        if encoder_hidden_states is not None:
            self._record(probs, attn.heads)
        hidden_states = attn.batch_to_head_dim(torch.bmm(probs, value))
        hidden_states = attn.to_out[1](attn.to_out[0](hidden_states))
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


class AttentionCapture:
    """Context manager: put a TokenAttentionRecorder on every cross-attention layer, restore after."""

    def __init__(self, model: torch.nn.Module, token_index: int | None, latent_size: tuple[int, int]):
        self.model = model
        self.recorder = None if token_index is None else TokenAttentionRecorder(token_index, latent_size)
        self._saved: list[tuple[Attention, object]] = []

    def __enter__(self) -> AttentionCapture:
        if self.recorder is not None:
            for module in self.model.modules():
                if isinstance(module, Attention) and module.is_cross_attention:
                    self._saved.append((module, module.processor))
                    module.set_processor(self.recorder)
            if not self._saved:
                raise DiffclustError("This UNet has no cross-attention layers, so it has no attention maps to read.")
        return self

    def __exit__(self, *exc) -> None:
        for module, processor in self._saved:
            module.set_processor(processor)
        self._saved.clear()

    def mean_map(self) -> torch.Tensor | None:
        return None if self.recorder is None else self.recorder.mean_map()
