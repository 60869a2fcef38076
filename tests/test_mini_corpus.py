"""The `mini` pretraining corpus keeps the seen/novel protocol: no novel class ever enters."""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from build_mini_corpus import corpus_rows  # noqa: E402


def _source(root: Path, name: str, labels: list[int]) -> None:
    (root / name / "images").mkdir(parents=True)
    lines = ["file,label,class_name,split"]
    for index, label in enumerate(labels):
        Image.new("RGB", (8, 8)).save(root / name / "images" / f"i{index}.png")
        lines.append(f"i{index}.png,{label},class_{label},{'test' if index % 2 else 'train'}")
    (root / name / "labels.csv").write_text("\n".join(lines) + "\n")


def test_only_seen_fine_grained_classes_enter_and_labels_do_not_collide(tmp_path):
    _source(tmp_path, "tinyimagenet", [0, 1, 1, 2])
    _source(tmp_path, "flowers102", [0, 1, 2, 3, 3])
    _source(tmp_path, "cub100", [5, 4])
    rows = corpus_rows(tmp_path)
    by_source = {}
    for row in rows:
        by_source.setdefault(row["source"], []).append(row)
    assert len(by_source["tinyimagenet"]) == 4  # coarse classes: all of them
    assert [r["class_name"] for r in by_source["flowers102"]] == ["class 0", "class 2"]  # odd labels never enter
    assert [r["class_name"] for r in by_source["cub100"]] == ["class 4"]
    assert by_source["flowers102"][0]["caption"] == "a photo of a class 0, a kind of flower"
    assert by_source["cub100"][0]["caption"] == "a photo of a class 4, a kind of bird"
    # labels renumbered past each source's range: tinyimagenet 0..2, flowers from 3, cub from 7
    assert sorted({r["label"] for r in rows}) == [0, 1, 2, 3, 5, 11]
    assert [r["split"] for r in by_source["flowers102"]] == ["train", "train"]
