"""config.toml as strict, typed pydantic models. Unknown keys are errors that name the key and the file."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from emocam.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class RuntimeConfig(Strict):
    device: Literal["cpu", "cuda", "auto"] = "cpu"
    torch_threads: int = Field(2, ge=1, le=256)
    models_dir: Path = Path("models")


class LoggingConfig(Strict):
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = "INFO"
    file: Path | None = None


class BackendSection(BaseModel):
    """`name` picks the backend; a table named after a backend holds that backend's own options."""

    model_config = ConfigDict(extra="allow")
    name: str
    _registry: Any = None  # set by subclasses: the registry whose backends may own option tables

    @model_validator(mode="after")
    def _check_backend_tables(self) -> "BackendSection":
        registry = self._registry_obj()
        for key, value in (self.model_extra or {}).items():
            cls = registry.get(key)  # ConfigError for an unknown backend names the key
            if not isinstance(value, dict):
                raise ValueError(f"[{registry.kind}.{key}] must be a table of {key}'s options")
            self.model_extra[key] = cls.Options.model_validate(value)
        registry.get(self.name)
        return self

    def options(self, name: str | None = None) -> BaseModel:
        name = name or self.name
        opts = (self.model_extra or {}).get(name)
        return opts if opts is not None else self._registry_obj().get(name).Options()

    def _registry_obj(self):
        raise NotImplementedError


class DetectorConfig(BackendSection):
    name: str = "mtcnn"
    # Detection runs on a copy whose longer side is at most this many pixels; crops come from the full frame.
    max_side: int = Field(640, ge=64)

    def _registry_obj(self):
        from emocam.detect import DETECTORS

        return DETECTORS


class ClassifierConfig(BackendSection):
    name: str = "mini-xception"
    batch_size: int = Field(8, ge=1)

    def _registry_obj(self):
        from emocam.classify import CLASSIFIERS

        return CLASSIFIERS


class Config(Strict):
    runtime: RuntimeConfig = RuntimeConfig()
    logging: LoggingConfig = LoggingConfig()
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    # Where the file came from; relative paths inside it resolve against its folder.
    source: Path | None = Field(None, exclude=True)

    @property
    def base_dir(self) -> Path:
        return self.source.parent if self.source else Path.cwd()

    def resolve(self, path: Path) -> Path:
        path = Path(os.path.expanduser(path))
        return path if path.is_absolute() else (self.base_dir / path).resolve()

    @property
    def models_dir(self) -> Path:
        env = os.environ.get("EMOCAM_MODELS")
        return Path(env).resolve() if env else self.resolve(self.runtime.models_dir)


def default_config_path() -> Path | None:
    env = os.environ.get("EMOCAM_CONFIG")
    if env:
        return Path(env)
    here = Path.cwd() / "config.toml"
    return here if here.is_file() else None


def _set_dotted(data: dict, dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {part!r} is not a table")
    node[leaf] = value


def _parse_override(text: str) -> tuple[str, Any]:
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set detector.name=mtcnn")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw  # a bare word is a string
    return key.strip(), value


def _format_error(err: ValidationError, where: str) -> str:
    lines = []
    for item in err.errors():
        key = ".".join(str(p) for p in item["loc"] if not str(p).startswith("function-"))
        msg = "unknown key" if item["type"] == "extra_forbidden" else item["msg"]
        lines.append(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
    return "invalid configuration\n  " + "\n  ".join(lines)


def load_config(path: Path | str | None = None, overrides: list[str] | None = None) -> Config:
    """Read config.toml (or the defaults when there is none) and apply KEY=VALUE overrides."""
    path = Path(path) if path else default_config_path()
    data: dict = {}
    where = "defaults"
    if path is not None:
        where = str(path)
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {path} not found; copy config.toml from the project or drop --config") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    for text in overrides or []:
        key, value = _parse_override(text)
        _set_dotted(data, key, value)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, where)) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    cfg.source = path.resolve() if path else None
    return cfg
