"""The seen/novel digits benchmark's own parts: the split and the table it writes (no training here)."""

from __future__ import annotations

import csv
import sys

from PIL import Image

from conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))
import difc_digits  # noqa: E402


def test_the_split_puts_even_digits_in_seen_and_odd_in_novel_with_their_rows(tmp_path):
    source = tmp_path / "usps"
    (source / "images").mkdir(parents=True)
    rows = [{"file": f"d{i}.png", "label": str(i % 10), "class_name": str(i % 10), "split": "train"} for i in range(20)]
    for row in rows:
        Image.new("L", (16, 16), int(row["label"]) * 20).save(source / "images" / row["file"])
    with open(source / "labels.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    assert difc_digits.split(source, tmp_path / "work") == {"seen": 10, "novel": 10}
    for name, parity in (("seen", 0), ("novel", 1)):
        with open(tmp_path / "work" / name / "labels.csv", newline="") as handle:
            found = list(csv.DictReader(handle))
        assert {int(row["label"]) % 2 for row in found} == {parity}
        assert sorted(p.name for p in (tmp_path / "work" / name / "images").iterdir()) == sorted(row["file"] for row in found)


def test_the_table_gives_mean_and_spread_over_seeds_and_the_mean_curve():
    row = lambda acc, curve: {"acc": acc, "nmi": 0.5, "ari": 0.25, "acc_by_epoch": curve}  # noqa: E731
    results = {"images": 10, "k": 5, "epochs": 2, "settings": {}, "model": "m",
               "seeds": {"0": {"k-means on raw pixels": row(0.80, []), "DiFiC (all three modules)": row(0.90, [70.0, 90.0])},
                         "1": {"k-means on raw pixels": row(0.70, []), "DiFiC (all three modules)": row(0.80, [60.0, 80.0])}}}
    table = difc_digits.markdown(results)
    assert "| k-means on raw pixels | 75.00 ± 5.00 | 0.500 | 0.250 | 2 |  |" in table
    assert "| DiFiC (all three modules) | 85.00 ± 5.00 | 0.500 | 0.250 | 2 | 65.0, 85.0 |" in table
