"""config.toml as strict, typed pydantic models. Unknown keys are errors that name the key and the file."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from emocam.errors import ConfigError
from emocam.explain.options import ExplainConfig
from emocam.export.options import ExportConfig
from emocam.obs.config import ObsConfig

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
    half: bool = True


class LoggingConfig(Strict):
    level: Literal["TRACE", "DEBUG", "INFO", "SUCCESS", "WARNING", "ERROR"] = "INFO"
    file: Path | None = None


class BackendTables(BaseModel):
    """A section whose tables named after backends hold those backends' own (strict) options."""

    model_config = ConfigDict(extra="allow")

    @model_validator(mode="after")
    def _check_backend_tables(self) -> "BackendTables":
        registry = self._registry_obj()
        for key, value in (self.model_extra or {}).items():
            cls = registry.get(key)  # ConfigError for an unknown backend names the key
            if isinstance(value, BaseModel):
                continue
            if not isinstance(value, dict):
                raise ValueError(f"{key} must be a table of the {key} {registry.kind}'s options")
            try:
                self.model_extra[key] = cls.Options.model_validate(value)
            except ValidationError as exc:  # keep the table's name in the key: several backends have a `width`
                raise ValidationError.from_exception_data(exc.title, [
                    {"type": e["type"], "loc": (key, *e["loc"]), "input": e["input"],
                     **({"ctx": e["ctx"]} if "ctx" in e else {})} for e in exc.errors()]) from None
        for name in self._selected():
            registry.get(name)
        return self

    def options(self, name: str) -> BaseModel:
        opts = (self.model_extra or {}).get(name)
        return opts if opts is not None else self._registry_obj().get(name).Options()

    def _selected(self) -> list[str]:
        raise NotImplementedError

    def _registry_obj(self):
        raise NotImplementedError


class BackendSection(BackendTables):
    """`name` picks one backend."""

    name: str

    def options(self, name: str | None = None) -> BaseModel:
        return super().options(name or self.name)

    def _selected(self) -> list[str]:
        return [self.name]


class DetectorConfig(BackendSection):
    name: str = "centerface-track"
    # Detection runs on a copy whose longer side is at most this many pixels; crops come from the full frame.
    max_side: int = Field(640, ge=64)

    def _registry_obj(self):
        from emocam.detect import DETECTORS

        return DETECTORS


class ClassifierConfig(BackendSection):
    name: str = "mini-xception"
    batch_size: int = Field(8, ge=1)
    # On a CPU, classify through a frozen TorchScript graph of the model (Classifier.use_cpu_graph).
    cpu_graph: bool = True
    # Average each face's logits with its mirror image's (Classifier.mirror): twice the work a face.
    mirror: bool = False

    def _registry_obj(self):
        from emocam.classify import CLASSIFIERS

        return CLASSIFIERS


class SourceConfig(BackendSection):
    name: str = "camera"

    def _registry_obj(self):
        from emocam.sources import SOURCES

        return SOURCES


class SinksConfig(BackendTables):
    enabled: list[str] = ["virtualcam"]
    # "continue": a sink that fails (no v4l2loopback, disk full) is dropped and the others go on; "exit": stop.
    on_error: Literal["continue", "exit"] = "continue"

    def _selected(self) -> list[str]:
        return self.enabled

    def _registry_obj(self):
        from emocam.sinks import SINKS

        return SINKS


class PipelineConfig(Strict):
    # Run the detector on every n-th analysed frame; in between, faces are re-classified at their tracked boxes.
    detect_interval: int = Field(1, ge=1)
    # Tracking: IoU needed to keep an identity, how long a face missed by the detector stays, EMA weights.
    track_iou: float = Field(0.3, gt=0, lt=1)
    track_max_age_s: float = Field(0.5, ge=0)
    smoothing: float = Field(0.3, gt=0, le=1)
    box_smoothing: float = Field(0.6, gt=0, le=1)
    # An analysis older than this is not drawn (the face may have moved away).
    stale_after_s: float = Field(1.0, gt=0)


class OutputConfig(Strict):
    # Size of the published frames; unset: the source's size.
    width: int | None = Field(None, ge=16)
    height: int | None = Field(None, ge=16)
    preset: str = "emotions"
    presets_dir: Path = Path("overlays")


class SessionConfig(Strict):
    # Each run gets its own folder here (recordings, frame logs); never overwritten.
    root: Path = Path("sessions")


class DaemonConfig(Strict):
    # Where the running daemon publishes its state for `emocam status`; unset: $XDG_RUNTIME_DIR or /tmp.
    status_file: Path | None = None


class Config(Strict):
    runtime: RuntimeConfig = RuntimeConfig()
    logging: LoggingConfig = LoggingConfig()
    detector: DetectorConfig = Field(default_factory=DetectorConfig)
    classifier: ClassifierConfig = Field(default_factory=ClassifierConfig)
    source: SourceConfig = Field(default_factory=SourceConfig)
    pipeline: PipelineConfig = PipelineConfig()
    output: OutputConfig = OutputConfig()
    sinks: SinksConfig = Field(default_factory=SinksConfig)
    session: SessionConfig = SessionConfig()
    daemon: DaemonConfig = DaemonConfig()
    obs: ObsConfig = ObsConfig()
    export: ExportConfig = ExportConfig()
    explain: ExplainConfig = ExplainConfig()
    # Where the file came from; relative paths inside it resolve against its folder.
    _config_file: Path | None = PrivateAttr(None)

    @property
    def config_file(self) -> Path | None:
        return self._config_file

    @property
    def base_dir(self) -> Path:
        return self.config_file.parent if self.config_file else Path.cwd()

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


def toml_string(text: str) -> str:
    """`text` as a TOML string, for building KEY=VALUE overrides from paths and names."""
    # ensure_ascii=False: JSON writes an emoji as a surrogate pair of \u escapes, which TOML refuses
    return json.dumps(text, ensure_ascii=False)


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
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from None
        except OSError as exc:  # a folder, no permission...
            raise ConfigError(f"config file {path}: {exc.strerror or exc}; point --config at a readable config.toml"
                              ) from None
    for text in overrides or []:
        key, value = _parse_override(text)
        _set_dotted(data, key, value)
    try:
        cfg = Config.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_error(exc, where)) from None
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    cfg._config_file = path.resolve() if path else None
    return cfg
