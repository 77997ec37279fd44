"""Overlay presets: overlays/<name>.toml lists annotators, in drawing order, each with its own options."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from pydantic import ValidationError

from emocam.errors import ConfigError
from emocam.render import ANNOTATORS, Annotator

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    annotators: tuple[Annotator, ...]

    @property
    def annotator_names(self) -> list[str]:
        return [a.name for a in self.annotators]


def parse_preset(name: str, data: dict, where: str) -> Preset:
    unknown = set(data) - {"description", "annotators"}
    if unknown:
        raise ConfigError(f"{where}: unknown key {sorted(unknown)[0]!r} (allowed: description, annotators)")
    items = data.get("annotators", [])
    if not isinstance(items, list):
        raise ConfigError(f"{where}: annotators must be an array of tables ([[annotators]])")
    built = []
    for i, item in enumerate(items):
        item = dict(item)
        kind = item.pop("name", None)
        if kind is None:
            raise ConfigError(f"{where}: annotators[{i}] has no name")
        try:
            cls = ANNOTATORS.get(kind)
        except ConfigError as exc:
            raise ConfigError(f"{where}: annotators[{i}]: {exc}") from None
        try:
            built.append(cls(cls.Options.model_validate(item)))
        except ValidationError as exc:
            first = exc.errors()[0]
            key = ".".join(str(p) for p in first["loc"])
            msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
            raise ConfigError(f"{where}: annotators[{i}] ({kind}): {key}: {msg}") from None
    return Preset(name, str(data.get("description", "")), tuple(built))


def load_presets(folder: Path) -> dict[str, Preset]:
    if not folder.is_dir():
        raise ConfigError(f"overlay preset folder {folder} not found; set output.presets_dir in config.toml")
    presets = {}
    for path in sorted(folder.glob("*.toml")):
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        presets[path.stem] = parse_preset(path.stem, data, str(path))
    if not presets:
        raise ConfigError(f"no overlay presets (*.toml) in {folder}")
    return presets
