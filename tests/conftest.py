"""Test set-up: no network, built-in backbones in a private folder, small real data at hand."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"  # tests must never reach the network
os.environ["TRANSFORMERS_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
DATA = SHARED / "data"
SD15_CONFIG = SHARED / "sd15-config"


@pytest.fixture(scope="session", autouse=True)
def private_diffclust_home(tmp_path_factory):
    home = tmp_path_factory.mktemp("diffclust-home")
    os.environ["DIFFCLUST_HOME"] = str(home)
    yield home


def require(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} is not here (../shared beside the checkout)")
    return path


@pytest.fixture(scope="session")
def butterflies() -> Path:
    return require(DATA / "butterflies10")
