"""What OBS can ask of EmoCam, as changes to the shared control state: scene names, CustomEvent commands, filters.

Nothing here talks to OBS, so routing is tested without it. A command is the object under "emocam" in a
CustomEvent, e.g. {"emocam": {"preset": "heatmap"}}; several keys in one command apply together or not at all.
"""

from __future__ import annotations

from typing import Any, Callable, Collection

from emocam.control import Control, ControlState
from emocam.errors import ConfigError
from emocam.obs.config import SCENE_PREFIX, ObsConfig
from emocam.types import EMOTIONS

COMMAND_KEY, ACK_KEY = "emocam", "emocam_ack"
START_STOP = ("start", "stop")
# Command keys, in the order they apply; "id" is echoed in the acknowledgement so a sender can match it.
KEYS = ("preset", "toggle", "show", "hide", "layer", "class", "export", "record")


class CommandError(ValueError):
    """An invalid command; the message names the key and what is allowed."""


def _name(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise CommandError(f"{key}: expected a name, got {value!r}")
    return value


def parse_command(command: Any) -> dict[str, Any]:
    """Check a command's shape and value types (not whether a preset or annotator exists): the checked command."""
    if not isinstance(command, dict):
        raise CommandError(f"a command is an object such as {{\"preset\": \"emotions\"}}, got {command!r}")
    unknown = [k for k in command if k not in KEYS and k != "id"]
    if unknown:
        raise CommandError(f"unknown command {unknown[0]!r} (known: {', '.join(KEYS)})")
    if not any(k in command for k in KEYS):
        raise CommandError(f"empty command (known: {', '.join(KEYS)})")
    out: dict[str, Any] = {}
    for key, value in command.items():
        if key == "id":
            if not isinstance(value, (str, int)) or isinstance(value, bool):
                raise CommandError(f"id: expected a string or number, got {value!r}")
        elif key in ("preset", "toggle", "show", "hide"):
            _name(key, value)
        elif key == "layer":
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
                raise CommandError(f"layer: expected a layer index (0, 1, ...) or null, got {value!r}")
        elif key == "class":
            if value is not None and value not in EMOTIONS:
                raise CommandError(f"class: expected one of {', '.join(EMOTIONS)} or null, got {value!r}")
        elif value not in START_STOP:  # export, record
            raise CommandError(f"{key}: expected \"start\" or \"stop\", got {value!r}")
        out[key] = value
    return out


def control_doc(control: Control) -> dict[str, Any]:
    return {"preset": control.preset, "hidden": sorted(control.hidden), "selection": dict(control.selection),
            "recording": control.recording, "exporting": control.exporting}


def preset_for_scene(scene: str, cfg: ObsConfig, presets: Collection[str], default_preset: str) -> str | None:
    """The preset an OBS program scene selects, or None to keep the current one."""
    if scene in cfg.scenes:
        return cfg.scenes[scene]
    if scene.startswith(SCENE_PREFIX) and scene[len(SCENE_PREFIX):] in presets:
        return scene[len(SCENE_PREFIX):]
    if cfg.unmapped_scenes == "keep":
        return None
    return default_preset if cfg.unmapped_scenes == "default" else cfg.unmapped_scenes


def check_config(cfg: ObsConfig, presets: Collection[str], annotators: Collection[str]) -> None:
    """[obs] names presets and annotators that config.py cannot know: ConfigError naming the key if one is wrong."""
    known = ", ".join(sorted(presets))
    for scene, preset in cfg.scenes.items():
        if preset not in presets:
            raise ConfigError(f"obs.scenes.{scene!r}: no preset {preset!r} (presets: {known})")
    if cfg.unmapped_scenes not in ("keep", "default") and cfg.unmapped_scenes not in presets:
        raise ConfigError(f"obs.unmapped_scenes: {cfg.unmapped_scenes!r} is not \"keep\", \"default\" or a preset "
                          f"({known})")
    for name, annotator in cfg.filters.items():
        if annotator not in annotators:
            raise ConfigError(f"obs.filters.{name!r}: no annotator {annotator!r} "
                              f"(annotators: {', '.join(sorted(annotators))})")


class Router:
    """Applies what OBS says to the control state. `presets` is asked each time: SIGHUP may replace the presets."""

    def __init__(self, control: ControlState, cfg: ObsConfig, presets: Callable[[], Collection[str]],
                 annotators: Collection[str], default_preset: str):
        self.control = control
        self.cfg = cfg
        self.presets = presets
        self.annotators = annotators
        self.default_preset = default_preset

    def on_scene(self, scene: str) -> str | None:
        """Select the scene's preset; returns the preset now active because of it, or None when unmapped."""
        preset = preset_for_scene(scene, self.cfg, self.presets(), self.default_preset)
        if preset is None or preset not in self.presets():  # a preset removed by a reload: keep the current one
            return None
        if self.control.get().preset != preset:
            self.control.update(preset=preset)
        return preset

    def on_filter(self, filter_name: str, enabled: bool) -> str | None:
        """A mapped filter was switched: show or hide its annotator. Returns the annotator, None when unmapped."""
        annotator = self.cfg.filters.get(filter_name)
        if annotator is None:
            return None
        self.apply({"show" if enabled else "hide": annotator})
        return annotator

    def apply(self, command: Any) -> dict[str, Any]:
        """Apply one command atomically; returns the acknowledgement. CommandError if invalid (nothing changes)."""
        command = parse_command(command)
        current = self.control.get()
        hidden, selection = set(current.hidden), dict(current.selection)
        changes: dict[str, Any] = {}
        for key in KEYS:
            if key not in command:
                continue
            value = command[key]
            if key == "preset":
                if value not in self.presets():
                    raise CommandError(f"preset: no preset {value!r} (presets: {', '.join(sorted(self.presets()))})")
                changes["preset"] = value
            elif key in ("toggle", "show", "hide"):
                if value not in self.annotators:
                    raise CommandError(f"{key}: no annotator {value!r} "
                                       f"(annotators: {', '.join(sorted(self.annotators))})")
                hide = value not in hidden if key == "toggle" else key == "hide"
                (hidden.add if hide else hidden.discard)(value)
                changes["hidden"] = frozenset(hidden)
            elif key in ("layer", "class"):
                if value is None:
                    selection.pop(key, None)
                else:
                    selection[key] = value
                changes["selection"] = selection
            else:
                changes["exporting" if key == "export" else "recording"] = value == "start"
        self.control.update(**changes)
        # Read back: a listener may have undone part of it (e.g. the recorder could not start).
        ack = {"ok": True, "applied": {k: v for k, v in command.items() if k != "id"},
               "state": control_doc(self.control.get())}
        if "id" in command:
            ack["id"] = command["id"]
        return ack
