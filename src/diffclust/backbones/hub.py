"""Find a hub model offline first: the local Hugging Face cache, then one quick look for the network.

Without this, a missing model makes huggingface_hub retry for half a minute, logging every
retry, before the real error. Here a name that cannot be a hub id fails at once, a cached
model loads from its snapshot folder without any request, and the network is probed once.
"""

from __future__ import annotations

import difflib
import os
import re
import socket
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlparse

from diffclust.backbones.names import BUILTIN_BACKBONES
from diffclust.errors import BackboneNotFoundError

HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
TRUE_VALUES = {"1", "ON", "YES", "TRUE"}


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for the cache only."""
    return any(os.environ.get(name, "").upper() in TRUE_VALUES for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def hub_reachable(timeout: float = 3.0) -> bool:
    """One TCP connection to the hub's endpoint (HF_ENDPOINT), instead of retried downloads."""
    endpoint = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        socket.create_connection((endpoint.hostname, port), timeout=timeout).close()
        return True
    except OSError:
        return False


def cached_snapshot(repo_id: str) -> Path | None:
    """The folder of `repo_id` in the local Hugging Face cache, or None (no request is made)."""
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # not cached (LocalEntryNotFoundError), or a cache entry without its files
        return None


def not_a_builtin_hint(name: str, builtins: tuple[str, ...] = BUILTIN_BACKBONES) -> str:
    close = difflib.get_close_matches(name, builtins, n=1)
    return f"Did you mean '{close[0]}'? " if close else ""


def locate_hub_model(reference: str, allow_download: bool = True, kind: str = "Backbone", option: str = "--backbone",
                     builtins: tuple[str, ...] = BUILTIN_BACKBONES) -> str:
    """A cached snapshot folder for the hub id `reference`, or the id itself when it can be
    downloaded; otherwise a clear error, at once. `kind`, `option` and `builtins` word the
    errors for what is being loaded (a diffusion backbone, a vision encoder)."""
    builtin = f"not a built-in name ({', '.join(builtins)}), " if builtins else ""
    if not HUB_ID.match(reference):
        raise BackboneNotFoundError(
            f"{kind} '{reference}' is {builtin}not an existing folder, and not a "
            f"Hugging Face hub id (owner/name). {not_a_builtin_hint(reference, builtins)}Check the spelling or the path."
        )
    cached = cached_snapshot(reference)
    if cached is not None:
        return str(cached)
    local = reference.rsplit("/", 1)[-1]
    python_name = option.lstrip("-").replace("-", "_")
    how = (f"Download it once on a machine with network (e.g. `hf download {reference} --local-dir {local}`) and pass "
           f"{option} {local} ({python_name}='{local}' in Python); a local folder works fully offline."
           + (f" Built-in: {', '.join(builtins)}." if builtins else ""))
    if not allow_download or hub_offline():
        raise BackboneNotFoundError(f"{kind} '{reference}' is not a folder here and not in the local Hugging Face cache "
                                    f"(offline mode: nothing is downloaded). {how}")
    if not hub_reachable():
        raise BackboneNotFoundError(f"{kind} '{reference}' is not a folder here nor in the local Hugging Face cache, and "
                                    f"the hub cannot be reached (no network). {how}")
    return reference


def require_unet_folder(folder: Path) -> None:
    """A backbone folder must hold unet/ (diffusers layout); say so before any model library loads."""
    if not (folder / "unet").is_dir():
        raise BackboneNotFoundError(
            f"'{folder}' is a folder but has no unet/ sub-folder; a backbone folder has the diffusers "
            "layout unet/, text_encoder/, tokenizer/, scheduler/ and optionally vae/ (a DDPM from `diffclust pretrain "
            "--unconditional`: unet/ and scheduler/)."
        )


def check_backbone_reference(reference: str) -> None:
    """Answer a backbone that cannot load before torch is imported (seconds): a built-in name,
    a folder with unet/, or a hub id that is cached or downloadable."""
    if reference in BUILTIN_BACKBONES:
        return
    folder = Path(reference).expanduser()
    if folder.is_dir():
        require_unet_folder(folder)
    else:
        locate_hub_model(reference)


@contextmanager
def library_progress_bars(enabled: bool):
    """Silence the download/loading/saving bars of huggingface_hub, transformers and diffusers
    while a model loads, when diffclust's own progress bars are off (--quiet)."""
    if enabled:
        yield
        return
    from diffusers.utils import logging as diffusers_logging
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from transformers.utils import logging as transformers_logging

    before = (are_progress_bars_disabled(), transformers_logging.is_progress_bar_enabled(), diffusers_logging.is_progress_bar_enabled())
    disable_progress_bars()
    transformers_logging.disable_progress_bar()
    diffusers_logging.disable_progress_bar()
    try:
        yield
    finally:
        if not before[0]:
            enable_progress_bars()
        if before[1]:
            transformers_logging.enable_progress_bar()
        if before[2]:
            diffusers_logging.enable_progress_bar()
