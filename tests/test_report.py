"""`diffclust report`: values on hand cases, a real run's report with no broken links, cached
thumbnails, and (marked slow) the page in a real headless Chromium."""

from __future__ import annotations

import csv
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from diffclust.cli import main
from diffclust.report.analysis import class_purity, cluster_class_table, confused_pairs, nearest_tokens, summarise_clusters

from conftest import SMALL_CLUDI, write_subset


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------- hand cases
def test_nearest_tokens_of_a_planted_vector():
    vocabulary = torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 0], [0.9, 0.1, 0, 0], [0, 0, 0, 1.0]])
    tokens = ["red", "green", "blue", "crimson", "<|endoftext|>"]
    planted = torch.tensor([0.9, 0.12, 0.0, 0.0]) * 3  # scale does not matter: cosine 0.9997 to crimson, 0.9912 to red
    assert nearest_tokens(planted, vocabulary, tokens, top=2) == ["crimson", "red"]
    assert nearest_tokens(torch.tensor([0.0, 0, 0.1, 1.0]), vocabulary, tokens, top=1, exclude={4}) == ["blue"]


def test_cluster_by_class_table_purity_and_confused_pairs_by_hand():
    clusters = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    labels = np.array([5, 5, 7, 7, 7, 9, 9, 5])
    cluster_ids, class_ids, table = cluster_class_table(clusters, labels)
    assert cluster_ids == [0, 1, 2] and class_ids == [5, 7, 9]
    assert table.tolist() == [[2, 1, 0], [0, 2, 0], [1, 0, 2]]
    assert class_purity(table).tolist() == pytest.approx([2 / 3, 2 / 3, 1.0])
    assert confused_pairs(table, class_ids) == [(5, 7, 1), (5, 9, 1)]  # cluster 0 holds 5 & 7, cluster 2 holds 5 & 9


def test_clusters_sort_by_size_or_confidence_with_members_most_confident_first():
    clusters = np.array([1, 1, 1, 0, 0])
    confidence = np.array([0.2, 0.9, 0.5, 0.95, 0.99])
    by_size = summarise_clusters(clusters, confidence, "size")
    assert [s.cluster for s in by_size] == [1, 0] and by_size[0].members.tolist() == [1, 2, 0]
    assert [s.cluster for s in summarise_clusters(clusters, confidence, "confidence")] == [0, 1]
    assert by_size[0].mean_confidence == pytest.approx(1.6 / 3)


def test_sample_agreement_counts_the_samples_that_assign_each_row_to_its_cluster():
    from diffclust.methods.cludi.training import sample_agreement

    sampled = torch.tensor([[[2.0, 0.0], [0.0, 1.0]],    # sample 1: row 0 -> 0, row 1 -> 1
                            [[0.0, 3.0], [0.0, 1.0]]])   # sample 2: row 0 -> 1, row 1 -> 1
    assert sample_agreement(sampled, np.array([0, 1]), 1.0, torch.zeros(2)).tolist() == [0.5, 1.0]
    # the offsets shift the balanced assignment: with b = (0, 3), every sample puts row 1 in cluster 0
    assert sample_agreement(sampled, np.array([0, 0]), 1.0, torch.tensor([0.0, 3.0])).tolist() == [1.0, 1.0]


def test_prototypes_are_generated_from_proxy_words_repeatably():
    from diffclust.backbones.registry import load_backbone
    from diffclust.report.prototypes import generate_prototypes

    backbone = load_backbone("tiny-random")
    words = torch.randn(3, backbone.token_dim, generator=torch.Generator().manual_seed(0))
    first = generate_prototypes(backbone, words, "A photo of a S*", 64, steps=3)
    again = generate_prototypes(backbone, words, "A photo of a S*", 64, steps=3)
    assert [image.size for image in first] == [(64, 64)] * 3
    assert all(np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, again))
    assert not np.array_equal(np.asarray(first[0]), np.asarray(first[1]))  # each word its own picture


# ---------------------------------------------------------------------------------- a real run
@pytest.fixture(scope="module")
def reported(butterflies, tmp_path_factory) -> Path:
    data = write_subset(butterflies, rows(butterflies / "labels.csv")[::8], tmp_path_factory.mktemp("report-data") / "data")
    out = tmp_path_factory.mktemp("report-runs") / "run"
    assert main(["fit", str(data), "--k", "5", "--backbone", "tiny-random", "--epochs", "2", "--device", "cpu", "--quiet",
                 "--report", "--per-cluster", "4", "--out", str(out)]) == 0
    return out


def _links(page: Path) -> list[str]:
    html = re.sub(r"<script>.*?</script>", "", page.read_text(), flags=re.S)  # the script builds tags, it links nothing
    return re.findall(r'(?:src|data-thumb)="([^"]+)"', html)


def test_the_report_of_a_run_has_every_part_and_no_broken_link(reported):
    page = reported / "report" / "index.html"
    html = page.read_text()
    links = _links(page)
    assert links and all((page.parent / link).is_file() for link in links)
    assert not re.search(r'(?:src|href)="(?:https?:)?//', html)  # offline: nothing from the network
    assert html.count('class="point"') == 52  # every image on the map
    summary = rows(reported / "clusters.csv")
    assert len(summary) == len(re.findall(r'<div class="cluster"', html)) and sum(int(row["size"]) for row in summary) == 52
    assert all(row["names"] for row in summary)  # DiFiC: nearest vocabulary tokens
    for part in ("Against the labels", "Cluster by class", "Most-confused class pairs", "training.png", "show object masks",
                 'class="masked"'):
        assert part in html


def test_a_second_report_reuses_every_thumbnail(reported, capsys):
    thumbs = reported / "report" / "thumbs"
    before = {path.name: path.stat().st_mtime_ns for path in thumbs.iterdir()}
    assert main(["report", str(reported), "--per-cluster", "4", "--no-names"]) == 0
    assert {path.name: path.stat().st_mtime_ns for path in thumbs.iterdir()} == before
    assert "clusters.csv" in capsys.readouterr().out


def test_a_cludi_report_shows_how_far_its_samples_agree(tmp_path, capsys):
    rng = np.random.default_rng(0)
    labels = np.arange(60) % 3
    np.save(tmp_path / "f.npy", (rng.normal(size=(3, 6)) * 5)[labels] + rng.normal(size=(60, 6)))
    out = tmp_path / "run"
    assert main(["fit", "--method", "cludi", "--features", str(tmp_path / "f.npy"), "--k", "3", "--epochs", "1", *SMALL_CLUDI,
                 "--predict-samples", "4", "--predict-steps", "3", "--teacher-steps", "3", "--batch-size", "32",
                 "--device", "cpu", "--quiet", "--report", "--out", str(out)]) == 0
    agreement = np.load(out / "sample_agreement.npy")
    assert agreement.shape == (60,) and ((agreement >= 0) & (agreement <= 1)).all()
    html = (out / "report" / "index.html").read_text()
    assert html.count("samples agreeing") >= 3 and html.count('class="point"') == 60


def test_report_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "no assignments.csv" in capsys.readouterr().err


# ---------------------------------------------------------------------------------- a real browser
@pytest.mark.slow
def test_the_report_loads_in_headless_chromium_without_errors(reported, tmp_path):
    """Run with `python -m pytest -m slow tests/test_report.py` after `apt-get install chromium`."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")
    if browser is None:
        pytest.skip("no Chromium here: apt-get install chromium")
    page = (reported / "report" / "index.html").resolve().as_uri()
    base = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=1280,2400",
            "--virtual-time-budget=5000"]
    shot = subprocess.run([*base, f"--screenshot={tmp_path / 'report.png'}", "--enable-logging=stderr", "--v=0", page],
                          capture_output=True, text=True, timeout=120)
    assert (tmp_path / "report.png").stat().st_size > 50_000  # a page with pictures, not a blank one
    console = [line for line in shot.stderr.splitlines() if "CONSOLE" in line or "ERR_FILE_NOT_FOUND" in line]
    assert console == [], console
    dom = subprocess.run([*base, "--dump-dom", page], capture_output=True, text=True, timeout=120).stdout
    assert dom.count('class="point"') == 52 and dom.count('class="cluster"') >= 2


def test_cluster_names_skip_word_pieces_punctuation_and_other_scripts():
    from diffclust.report.analysis import nearest_tokens, unreadable_token_ids

    bert = ["[PAD]", "cat", "##ing", "1882", "福", "!", "a", "tabby", "123456"]
    assert unreadable_token_ids(bert) == {0, 2, 4, 5, 6, 8}
    clip = ["cat</w>", "cat", "tab", "tabby</w>", "7</w>", "__</w>"]
    assert unreadable_token_ids(clip) == {1, 2, 5}
    # the nearest readable word wins over a nearer word piece
    embeddings = torch.tensor([[0.0, 1.0], [1.0, 0.2], [1.0, 0.0], [0.0, -1.0], [1.0, 0.1], [1.0, 0.05], [0.9, 0.0], [0.5, 0.5], [0.3, 0.0]])
    assert nearest_tokens(torch.tensor([1.0, 0.0]), embeddings, bert, top=2, exclude=unreadable_token_ids(bert)) == ["cat", "tabby"]
