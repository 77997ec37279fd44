"""Shared fixtures. Real data comes from $EMOCAM_DATA (default ../shared/data); tests needing it skip without it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def data_root() -> Path | None:
    env = os.environ.get("EMOCAM_DATA")
    path = Path(env) if env else ROOT.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    root = data_root()
    if root is None:
        pytest.skip("shared evaluation data not found: set EMOCAM_DATA to the folder holding eval/ and reference/")
    return root


@pytest.fixture(scope="session")
def fer_train_dir(data_dir) -> Path:
    """FER2013's training faces, one folder per emotion."""
    root = data_dir / "fer2013" / "train"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    return root


@pytest.fixture(scope="session")
def models_dir() -> Path:
    """The pulled weights (`emocam models pull`, done by `make test`)."""
    path = Path(os.environ.get("EMOCAM_MODELS", ROOT / "models"))
    if not (path / "manifest.toml").is_file():
        pytest.skip(f"no weights manifest in {path}: run `emocam models pull`")
    return path


@pytest.fixture(scope="session")
def mtcnn_weights(models_dir):
    """The weight store, once MTCNN's three nets are in it."""
    from emocam.detect.mtcnn import WEIGHTS
    from emocam.weights import WeightStore

    store = WeightStore(models_dir)
    missing = [name for name in WEIGHTS.values() if name not in store.manifest()]
    if missing:
        pytest.skip(f"no {', '.join(missing)} in {models_dir}: run `emocam models pull`")
    return store


@pytest.fixture(scope="session")
def astronaut_bgr():
    import skimage.data

    return skimage.data.astronaut()[:, :, ::-1].copy()


PER_CLASS = 40  # 280 real FER2013 faces: enough to see learning, small enough for seconds


@pytest.fixture(scope="session")
def fer_files(fer_train_dir) -> dict[str, list]:
    from emocam.types import EMOTIONS

    return {e: sorted((fer_train_dir / e).glob("*.jpg"))[:PER_CLASS] for e in EMOTIONS}


@pytest.fixture(scope="session")
def fer_folder(fer_files, tmp_path_factory):
    """An image folder of real FER2013 faces (symlinks), plus a folder that is not an emotion."""
    root = tmp_path_factory.mktemp("fer")
    for emotion, files in fer_files.items():
        (root / emotion).mkdir()
        for f in files:
            (root / emotion / f.name).symlink_to(f)
    (root / "contempt").mkdir()
    (root / "contempt" / "x.jpg").symlink_to(fer_files["happy"][0])
    return root
