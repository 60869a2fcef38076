"""What the report says about clusters: sizes and confidences, the cluster-by-class table,
per-class purity, the most-confused class pairs, and cluster names from the vocabulary."""

from __future__ import annotations

import re
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import torch


@dataclass
class ClusterSummary:
    cluster: int
    size: int
    mean_confidence: float
    members: np.ndarray  # indices into the run's rows, most confident first


def summarise_clusters(clusters: np.ndarray, confidence: np.ndarray, sort: str = "size") -> list[ClusterSummary]:
    """One summary per cluster in use, sorted by size (largest first) or mean confidence."""
    summaries = []
    for cluster in np.unique(clusters):
        members = np.flatnonzero(clusters == cluster)
        members = members[np.argsort(-confidence[members], kind="stable")]
        summaries.append(ClusterSummary(int(cluster), len(members), float(confidence[members].mean()), members))
    key = (lambda s: (-s.size, s.cluster)) if sort == "size" else (lambda s: (-s.mean_confidence, s.cluster))
    return sorted(summaries, key=key)


def cluster_class_table(clusters: np.ndarray, labels: np.ndarray) -> tuple[list[int], list[int], np.ndarray]:
    """(clusters, classes, counts[cluster, class]) over the rows that have a label."""
    cluster_ids, class_ids = sorted(set(clusters.tolist())), sorted(set(labels.tolist()))
    table = np.zeros((len(cluster_ids), len(class_ids)), dtype=np.int64)
    for cluster, label in zip(clusters, labels):
        table[cluster_ids.index(cluster), class_ids.index(label)] += 1
    return cluster_ids, class_ids, table


def class_purity(table: np.ndarray) -> np.ndarray:
    """For each class: the share of its images that sit in its most common cluster."""
    totals = table.sum(axis=0)
    return np.where(totals > 0, table.max(axis=0) / np.maximum(totals, 1), 0.0)


def confused_pairs(table: np.ndarray, classes: list[int], top: int = 5) -> list[tuple[int, int, int]]:
    """Class pairs most often put together: (class a, class b, images of the smaller share summed
    over the clusters holding both), largest first."""
    pairs = []
    for a, b in combinations(range(table.shape[1]), 2):
        together = int(np.minimum(table[:, a], table[:, b]).sum())
        if together:
            pairs.append((classes[a], classes[b], together))
    return sorted(pairs, key=lambda pair: (-pair[2], pair[0], pair[1]))[:top]


def nearest_tokens(vector: torch.Tensor, embeddings: torch.Tensor, tokens: list[str], top: int = 3,
                   exclude: set[int] = frozenset()) -> list[str]:
    """The vocabulary tokens whose input embeddings are nearest (cosine) to `vector`."""
    similarity = torch.nn.functional.cosine_similarity(embeddings.float(), vector.float()[None], dim=1)
    if exclude:
        similarity[list(exclude)] = -2.0
    order = similarity.argsort(descending=True)[:top].tolist()
    return [tokens[index] for index in order]


WORD = re.compile(r"[A-Za-z]{2,}|[0-9]{1,4}")


def unreadable_token_ids(tokens: list[str]) -> set[int]:
    """Ids of the tokens that are not a whole English word or a short number: word pieces (BERT's
    ##, CLIP's tokens without </w>), punctuation, other scripts. A cluster's name should be
    something a reader can read, and a word piece such as "##ing" says nothing."""
    clip_style = any(token.endswith("</w>") for token in tokens[:1000])
    unreadable = set()
    for index, token in enumerate(tokens):
        whole = token.endswith("</w>") if clip_style else not token.startswith("##")
        if not (whole and WORD.fullmatch(readable_token(token))):
            unreadable.add(index)
    return unreadable


def readable_token(token: str) -> str:
    """CLIP marks word ends with </w> and BERT word pieces with ##: show the word."""
    return token.replace("</w>", "").replace("Ġ", "").lstrip("#") or token
