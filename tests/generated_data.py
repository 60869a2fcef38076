"""Colour photo sets the tests generate, so that the suite runs from a bare clone.

They stand in for the real photo sets beside the repository (butterflies10, flowers102, ...):
the same layout (images/, labels.csv with file,label,class_name,split), JPEGs of a photo's size
and shape, and class names with spaces and brackets. Each class is a coloured shape at a random
place and scale on a noisy, tinted background, so the images differ from one another as photos
do, while the tests that read them check machinery (rows, files, resumes, reports), never quality.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

#: (name, RGB, shape) of each class, in label order
CLASSES = [
    ("Red disc (Rota rubra)", (200, 40, 40), "ellipse"),
    ("Blue square (Quadra caerulea)", (40, 60, 200), "square"),
    ("Green triangle (Trigona viridis)", (40, 170, 60), "triangle"),
    ("Yellow diamond (Rhombus flavus)", (230, 200, 40), "diamond"),
    ("Purple ring (Anulus purpureus)", (140, 50, 160), "ring"),
    ("Orange cross (Crux aurantia)", (240, 130, 30), "cross"),
    ("Cyan bar (Virga cyanea)", (40, 190, 200), "bar"),
    ("Black star (Stella nigra)", (30, 30, 30), "star"),
    ("White hexagon (Hexagonum album)", (240, 240, 240), "hexagon"),
    ("Brown oval (Ovum fuscum)", (120, 80, 40), "oval"),
]
#: images per class of the butterflies10 stand-in (half the real set's counts, 416 in all: the tests check machinery)
BUTTERFLY_COUNTS = (41, 46, 31, 45, 44, 50, 44, 28, 45, 42)


def _polygon(kind: str, cx: float, cy: float, r: float) -> list[tuple[float, float]]:
    corners = {"triangle": 3, "diamond": 4, "hexagon": 6, "star": 10}[kind]
    points = []
    for index in range(corners):
        angle = np.pi / 2 + 2 * np.pi * index / corners
        radius = r * (0.45 if kind == "star" and index % 2 else 1.0)
        points.append((cx + radius * np.cos(angle), cy - radius * np.sin(angle)))
    return points


def draw_photo(label: int, rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    """One 'photo' of class `label`: width x height, RGB."""
    width, height = size
    tint = rng.integers(60, 200, size=3)
    background = np.clip(tint + rng.normal(0, 25, size=(height, width, 3)), 0, 255).astype(np.uint8)
    image = Image.fromarray(background, "RGB")
    draw = ImageDraw.Draw(image)
    _, colour, kind = CLASSES[label % len(CLASSES)]
    r = rng.uniform(0.2, 0.35) * min(size)
    cx, cy = rng.uniform(r, width - r), rng.uniform(r, height - r)
    box = [cx - r, cy - r, cx + r, cy + r]
    if kind == "ellipse":
        draw.ellipse(box, fill=colour)
    elif kind == "oval":
        draw.ellipse([cx - r, cy - r / 2, cx + r, cy + r / 2], fill=colour)
    elif kind == "ring":
        draw.ellipse(box, outline=colour, width=max(2, int(r / 3)))
    elif kind == "square":
        draw.rectangle(box, fill=colour)
    elif kind == "bar":
        draw.rectangle([cx - r, cy - r / 5, cx + r, cy + r / 5], fill=colour)
    elif kind == "cross":
        draw.rectangle([cx - r, cy - r / 5, cx + r, cy + r / 5], fill=colour)
        draw.rectangle([cx - r / 5, cy - r, cx + r / 5, cy + r], fill=colour)
    else:
        draw.polygon(_polygon(kind, cx, cy, r), fill=colour)
    return image


def write_photo_set(folder: Path, counts: tuple[int, ...], *, seed: int = 0, split: str = "all", prefix: str = "") -> Path:
    """A labelled photo set: counts[c] JPEGs of class c (short side 96 px, landscape or portrait)."""
    rng = np.random.default_rng(seed)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for label, count in enumerate(counts):
        for index in range(count):
            long_side = int(rng.integers(120, 150))
            size = (long_side, 96) if rng.random() < 0.7 else (96, long_side)
            name = f"{prefix}{label:02d}{index:04d}.jpg"
            draw_photo(label, rng, size).save(folder / "images" / name, quality=90)
            rows.append([name, label, CLASSES[label % len(CLASSES)][0], split])
    with open(folder / "labels.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "label", "class_name", "split"])
        writer.writerows(rows)
    return folder


def write_photo_root(root: Path) -> Path:
    """A stand-in for ../shared/data's photo sets (the sources the mini corpus reads), small:
    8 images of each of 4 classes per set, with a train/test split."""
    for offset, name in enumerate(("tinyimagenet", "flowers102", "cub100", "butterflies10")):
        write_photo_set(root / name, (8, 8, 8, 8), seed=offset, split="train")
    return root
