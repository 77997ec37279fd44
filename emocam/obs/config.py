"""The [obs] section of config.toml. Kept free of emocam.config so that module can import it."""

from __future__ import annotations

import os

from pydantic import BaseModel, ConfigDict, Field, SecretStr

PASSWORD_ENV = "EMOCAM_OBS_PASSWORD"
SCENE_PREFIX = "EmoCam: "  # a scene named "EmoCam: <preset>" selects that preset without a mapping


class ObsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Off by default: the daemon opens no network connection unless asked to.
    enabled: bool = False
    host: str = "localhost"
    port: int = Field(4455, ge=1, le=65535)
    # OBS: Tools > WebSocket Server Settings. $EMOCAM_OBS_PASSWORD wins over this, so it can stay out of files.
    password: SecretStr | None = None
    # Longest wait for one answer from OBS; the video never waits for OBS.
    timeout_s: float = Field(3.0, gt=0, le=60)
    # Reconnection backoff doubles from 0.5 s up to this; a rejected password is retried at this pace.
    retry_max_s: float = Field(30.0, ge=1, le=3600)
    # OBS scene name -> overlay preset.
    scenes: dict[str, str] = {}
    # Scenes neither mapped nor named "EmoCam: <preset>": "keep" the current preset, "default" (output.preset),
    # or the name of a preset.
    unmapped_scenes: str = "keep"
    # OBS filter name -> annotator: enabling the filter (on any source) shows the annotator, disabling hides it.
    filters: dict[str, str] = {}
    # `record` commands also start/stop OBS's own recording.
    obs_recording: bool = False

    def secret(self) -> str:
        env = os.environ.get(PASSWORD_ENV)
        if env:
            return env
        return self.password.get_secret_value() if self.password else ""

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"
