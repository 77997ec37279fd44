"""Reading images from disk with errors a user can act on."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from emocam.errors import EmoCamError


class UnreadableImage(EmoCamError):
    pass


def read_each(paths, failed: list[dict], desc: str):
    """(path, BGR image) for every readable path, with progress; unreadable ones are logged and appended to
    `failed` as {"file", "error"} so a command over many files finishes and reports them."""
    from loguru import logger

    from emocam.progress import progress

    for path in progress(paths, desc=desc):
        try:
            image = read_bgr(path)
        except UnreadableImage as exc:
            logger.warning(str(exc))
            failed.append({"file": str(path), "error": str(exc)})
            continue
        yield path, image


BUILTIN_PREFIX = "skimage:"


def read_bgr(path: Path | str) -> np.ndarray:
    """An image file, or `skimage:NAME` for a sample picture that scikit-image ships (e.g. skimage:astronaut)."""
    if str(path).startswith(BUILTIN_PREFIX):
        return _builtin(str(path)[len(BUILTIN_PREFIX):])
    path = Path(path)
    if not path.is_file():
        raise UnreadableImage(f"{path}: no such file")
    # imdecode over imread: handles non-ASCII paths and never prints libjpeg noise as a "success".
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:  # no permission, I/O error: as unreadable as a corrupt file
        raise UnreadableImage(f"{path}: cannot be read ({exc.strerror or exc})") from None
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if image is None:
        raise UnreadableImage(f"{path}: not a readable image (corrupt or unsupported format)")
    return image


def write_png(path: Path | str, image: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise EmoCamError(f"could not encode {path} as PNG")
    tmp = path.with_name(path.name + ".part")
    try:
        tmp.write_bytes(buf.tobytes())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EmoCamError(f"could not write {path}: {exc.strerror}; free some disk space or pick another --out") from None


# The pictures scikit-image ships in its wheel: anything else in skimage.data downloads (download_all fetches the
# whole set) or is not an image.
SKIMAGE_SAMPLES = ("astronaut", "brick", "camera", "cat", "checkerboard", "chelsea", "clock", "coffee", "coins",
                   "colorwheel", "grass", "gravel", "horse", "logo", "moon", "page", "rocket", "text")


def _builtin(name: str) -> np.ndarray:
    import skimage.data

    if name not in SKIMAGE_SAMPLES:
        raise UnreadableImage(f"skimage:{name}: not one of the sample images ({', '.join(SKIMAGE_SAMPLES)})")
    try:
        image = np.asarray(getattr(skimage.data, name)())
    except Exception as exc:  # noqa: BLE001 - another scikit-image version may lack or fetch it
        raise UnreadableImage(f"skimage:{name}: scikit-image could not load it ({type(exc).__name__}: {exc})") from None
    if image.ndim == 2:
        return cv2.cvtColor(image.astype(np.uint8), cv2.COLOR_GRAY2BGR)
    return cv2.cvtColor(image[:, :, :3].astype(np.uint8), cv2.COLOR_RGB2BGR)


def save_figure(fig, path: Path | str) -> Path:
    """A matplotlib figure as PNG, written to a temporary name and renamed: never a half-written plot."""
    path = Path(path)
    tmp = path.with_name(path.name + ".part")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(tmp, format="png")
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise EmoCamError(f"could not write {path}: {exc.strerror}; free some disk space or pick another path") from None
    return path


def unique_name(name: str, used: set[str]) -> str:
    """name.png, or name_2.png, name_3.png... when an earlier output of this run took it (a/x.jpg, b/x.png)."""
    base, n = name, 2
    while name in used:
        name = base.replace(".png", f"_{n}.png")
        n += 1
    used.add(name)
    return name
