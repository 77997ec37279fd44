"""Weight files in models/, checked against models/manifest.toml before they are loaded."""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

import torch

from emocam.errors import WeightsError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MANIFEST = "manifest.toml"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def names_a_file(ref: str) -> bool:
    """Whether a weights setting names a file (a path, or a name with a suffix) rather than a manifest entry."""
    return bool(Path(ref).suffix) or "/" in ref or Path(ref).expanduser().is_file()


class WeightStore:
    """Finds a named weight file, verifies its hash once per process and loads it without pickle."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self._verified: set[str] = set()

    def manifest(self) -> dict:
        path = self.root / MANIFEST
        if not path.is_file():
            return {}
        try:
            return tomllib.loads(path.read_text(encoding="utf-8")).get("weights", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise WeightsError(f"{path} is damaged ({exc}); restore it with `git checkout -- {MANIFEST}` in the "
                               "project, or point runtime.models_dir at an intact models folder") from None

    def entry(self, name: str) -> dict:
        entry = self.manifest().get(name)
        if entry is None:
            raise WeightsError(f"no weights named {name!r} in {self.root / MANIFEST}; run `emocam models pull`")
        return entry

    def path(self, name: str) -> Path:
        entry = self.entry(name)
        path = self.root / entry["file"]
        if not path.is_file():
            raise WeightsError(f"weights {name!r} are missing ({path}); run `emocam models pull` (or `make demo`)")
        if name not in self._verified:
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                raise WeightsError(
                    f"weights {name!r} at {path} do not match the manifest (sha256 {digest[:12]}..., expected "
                    f"{entry['sha256'][:12]}...); run `emocam models pull --force`"
                )
            self._verified.add(name)
        return path

    def locate(self, ref: str) -> tuple[Path, str]:
        """The file and sha256 of a weights setting: a file it names (hashed here), or a manifest entry's file
        (verified against the manifest). Raises WeightsError for a named file that does not exist."""
        if names_a_file(ref):
            path = Path(ref).expanduser()
            if not path.is_file():
                raise WeightsError(f"no such file {path}")
            return path, sha256_file(path)
        return self.path(ref), self.sha256(ref)

    def sha256(self, name: str) -> str:
        return self.entry(name)["sha256"]

    def state_dict(self, name: str) -> dict[str, torch.Tensor]:
        return torch.load(self.path(name), map_location="cpu", weights_only=True)
