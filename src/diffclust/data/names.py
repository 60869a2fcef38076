"""File names as the disk has them. Not every name is valid UTF-8 (old archives, Windows shares):
Python keeps such bytes as lone surrogates, which strict UTF-8 refuses to encode. Hashes and
text files that hold names use the same escape, so a name round-trips byte for byte."""

#: the error handler for every encoding of a file name (and for CSV files that hold names)
NAME_ERRORS = "surrogateescape"


def name_bytes(text: str) -> bytes:
    """`text`, which may hold a file name, as bytes for a hash: the disk's own bytes for a name that is not UTF-8."""
    return text.encode("utf-8", NAME_ERRORS)


def split_inside(paths: dict, root) -> tuple[dict, list]:
    """({name: path} of the paths that lie under `root` once links are followed, [the other
    names]): what a report may show of a data folder, and what would leave it."""
    from pathlib import Path

    root = Path(root).resolve()
    inside = {name: path for name, path in paths.items() if Path(path).resolve().is_relative_to(root)}
    return inside, [name for name in paths if name not in inside]


def some_names(names: list[str], shown: int = 3) -> str:
    """The first few of `names` for a one-line message: 'a, b, c, ...'."""
    return ", ".join(names[:shown]) + (", ..." if len(names) > shown else "")
