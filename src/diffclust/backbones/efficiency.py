"""How the frozen backbone runs while DiFiC trains: memory and speed, never what it computes.

DiFiC's training step back-propagates through the text encoder and the UNet to one token,
S*, while every backbone weight stays frozen. So the weights need no fp32 master copy (bf16
is enough), the UNet's activations can be recomputed in the backward pass instead of kept
(gradient checkpointing), and the VAE, used only for the cached constants, can leave the GPU.
``"auto"`` turns the memory options on for CUDA and off elsewhere: on a CPU, memory is rarely
the limit and each option costs time (benchmarks/difc_step.py measures them). The one CPU
exception is the text encoder on a CPU with bf16 matrix units (Intel AMX): its matmuls run
several times faster in bf16, so "auto" stores it in bf16 there, with explicit attention
(PyTorch's fused CPU attention is slower in bf16 than the matmuls it saves); the small UNets
that train on a CPU gained nothing in bf16. Measured: docs/benchmarks/difc.md.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from diffclust.errors import DiffclustError

WEIGHT_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
AUTO = "auto"


def _switch(value, name: str) -> bool | str:
    if value in (AUTO, True, False):
        return value
    raise DiffclustError(f"{name} must be 'auto', True or False, got {value!r}")


@dataclass(frozen=True)
class TrainingEfficiency:
    """Settings of the frozen backbone during training steps (each also a CLI flag)."""

    #: storage type of the frozen UNet and text-encoder weights: auto (bf16 on CUDA, else fp32), fp32, bf16, fp16
    weights_dtype: str = AUTO
    #: recompute UNet blocks and the text encoder in the backward pass instead of keeping activations
    gradient_checkpointing: bool | str = AUTO
    #: move the VAE to the CPU once the constants are cached (training never calls it)
    offload_vae: bool = True
    #: UNet weights and inputs in channels_last (NHWC), which tensor cores prefer
    channels_last: bool | str = AUTO
    #: torch.compile the UNet for the training passes (a one-off compile of minutes)
    compile_unet: bool = False
    #: TF32 matmuls and convolutions on Ampere and newer GPUs (no effect elsewhere)
    tf32: bool = True
    #: PyTorch's fused attention (SDPA) in every attention layer; the one pass that records
    #: cross-attention probabilities (the object mask) swaps in its own explicit processor
    fused_attention: bool = True
    #: storage type of the frozen text encoder's weights: auto (as weights_dtype; bf16 on a CPU
    #: with AMX when weights_dtype is auto too), fp32, bf16, fp16
    text_encoder_dtype: str = AUTO

    def __post_init__(self):
        for name, value in (("weights_dtype", self.weights_dtype), ("text_encoder_dtype", self.text_encoder_dtype)):
            if value != AUTO and value not in WEIGHT_DTYPES:
                flag = "--" + name.replace("_", "-")
                raise DiffclustError(f"{name} ({flag}) must be auto or one of {', '.join(WEIGHT_DTYPES)}, got {value!r}")
        _switch(self.gradient_checkpointing, "gradient_checkpointing (--gradient-checkpointing)")
        _switch(self.channels_last, "channels_last (--channels-last)")

    def resolved(self, device: torch.device | str) -> TrainingEfficiency:
        """The settings with every "auto" decided for `device`."""
        cuda = torch.device(device).type == "cuda"
        dtype = self.weights_dtype
        if dtype == AUTO:
            dtype = ("bf16" if torch.cuda.is_bf16_supported() else "fp16") if cuda else "fp32"
        text_dtype = self.text_encoder_dtype
        if text_dtype == AUTO:
            amx = self.weights_dtype == AUTO and torch.device(device).type == "cpu" and cpu_has_bf16_matrix_units()
            text_dtype = "bf16" if amx else dtype
        checkpointing = cuda if self.gradient_checkpointing == AUTO else self.gradient_checkpointing
        channels_last = cuda if self.channels_last == AUTO else self.channels_last
        return replace(self, weights_dtype=dtype, text_encoder_dtype=text_dtype, gradient_checkpointing=bool(checkpointing),
                       channels_last=bool(channels_last))

    @property
    def dtype(self) -> torch.dtype:
        """The UNet's storage type while training."""
        return _resolved_dtype(self.weights_dtype)

    @property
    def text_dtype(self) -> torch.dtype:
        """The text encoder's storage type while training."""
        return _resolved_dtype(self.text_encoder_dtype)


def _resolved_dtype(name: str) -> torch.dtype:
    if name == AUTO:
        raise ValueError("resolve the settings for a device first (TrainingEfficiency.resolved)")
    return WEIGHT_DTYPES[name]


def cpu_has_bf16_matrix_units() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (Intel AMX tiles). PyTorch only
    offers a private probe; without it the answer is no, and fp32 stays."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except (RuntimeError, AttributeError):
        return False


def enable_tf32(device: torch.device | str) -> None:
    """TF32 for float32 matmuls and cuDNN convolutions (Ampere and newer; a no-op elsewhere)."""
    if torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
