"""The [export] section of config.toml. Defined here, not in emocam.config, so the exporter stands on its own."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, model_validator


class HogOptions(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Each patch is turned gray and resized to size x size (INTER_AREA) before scikit-image's hog().
    size: int = Field(64, ge=16, le=512)
    orientations: int = Field(9, ge=2, le=36)
    pixels_per_cell: int = Field(8, ge=2)
    cells_per_block: int = Field(2, ge=1)

    @model_validator(mode="after")
    def _blocks_fit(self) -> "HogOptions":
        if self.size // self.pixels_per_cell < self.cells_per_block:
            raise ValueError(f"a {self.size} px patch has fewer than cells_per_block={self.cells_per_block} "
                             f"cells of {self.pixels_per_cell} px per side")
        return self


class ExportConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # Export from the start (also `emocam run --export`); OBS's {"emocam": {"export": "start"|"stop"}} toggles it.
    enabled: bool = False
    # Numbered sessions s0001, s0002, ... go here (relative to config.toml).
    root: Path = Path("exports")
    # An episode starts once one emotion has been the top class in this many analyses in a row...
    start_after: int = Field(5, ge=1)
    # ...with at least this probability (the tracker's smoothed value).
    min_probability: float = Field(0.4, ge=0, le=1)
    # Patches of a running episode: one every n-th video frame, or, when per_second is set, that many per second.
    every_n_frames: int = Field(5, ge=1)
    per_second: float | None = Field(None, gt=0)
    # Margin around the face box, as a share of the box's width/height on each side.
    margin: float = Field(0.2, ge=0, le=2)
    # Also save an eye-aligned copy of aligned_size x aligned_size (needs landmarks).
    aligned: bool = False
    aligned_size: int = Field(112, ge=16, le=1024)
    # Patches waiting for the writer thread; when full, new patches are dropped (and counted), never waited for.
    queue_size: int = Field(256, ge=1)
    # Export pauses with a warning when the export root holds more than max_mb, or its disk has less than
    # min_free_mb free; it resumes by itself when there is room again.
    max_mb: float | None = Field(None, gt=0)
    min_free_mb: float = Field(500, ge=0)
    hog: HogOptions = HogOptions()
