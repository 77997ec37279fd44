"""[explain] in config.toml: which maps the analysis thread computes for every face and what goes into the log."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Mode = Literal["activation", "cam", "gradcam"]
Stat = Literal["mean", "max", "above", "centroid", "regions"]
ALL_STATS: tuple[Stat, ...] = ("mean", "max", "above", "centroid", "regions")


class ExplainConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    enabled: bool = True
    # activation: channel mean of each rectified conv output; cam: activation, plus the class layer's one map per
    # class (both ~+2 ms per face on 2 cores); gradcam: every layer per class from one batched backward pass
    # (~+13 ms per face).
    mode: Mode = "cam"
    # Conv layers to explain, by module name (`emocam explain --json` lists them); empty: all of them.
    layers: list[str] = []
    # The running scale of each layer: an EMA of these percentiles of its maps, `range_update` the weight of a frame.
    low_percentile: float = Field(1.0, ge=0, lt=50)
    high_percentile: float = Field(99.0, gt=50, le=100)
    range_update: float = Field(0.05, gt=0, le=1)
    # Per tracked face, the weight of a new map in the displayed one (1: no smoothing).
    smoothing: float = Field(0.5, gt=0, le=1)
    # "above": share of the face window whose (normalised) map exceeds this.
    threshold: float = Field(0.5, ge=0, le=1)
    # Statistics written with each face into the session log, for the predicted class or all classes.
    log_stats: list[Stat] = list(ALL_STATS)
    log_classes: Literal["predicted", "all"] = "predicted"

    @model_validator(mode="after")
    def _unique_stats(self) -> "ExplainConfig":
        if len(set(self.log_stats)) != len(self.log_stats):
            raise ValueError("log_stats: each statistic once")
        return self
