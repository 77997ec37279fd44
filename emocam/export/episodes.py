"""When to save a face patch: per tracked face, an episode runs while one emotion stays dominant.

An emotion is *dominant* for a face when it is the top class with at least `min_probability`. After
`start_after` analyses in a row with the same dominant emotion an episode starts under it (and saves at once);
it keeps saving at its rate while that emotion is the face's top class, and ends when another emotion has been
dominant long enough to start its own episode, when the face leaves, or when export stops. Frames inside an
episode whose top class differs (a blink, a transition) are not saved: their label would be wrong.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emocam.types import EMOTIONS, Face


@dataclass
class Episode:
    id: int
    track: int
    label: str
    start_frame: int
    start_t: float
    last_saved_frame: int | None = None
    last_saved_t: float | None = None
    saved: int = 0


@dataclass
class _TrackState:
    candidate: str | None = None
    run: int = 0
    episode: Episode | None = None


class EpisodeTracker:
    def __init__(self, start_after: int = 5, min_probability: float = 0.4, every_n_frames: int = 5,
                 per_second: float | None = None, first_id: int = 1):
        self.start_after = start_after
        self.min_probability = min_probability
        self.every_n_frames = every_n_frames
        self.per_second = per_second
        self.next_id = first_id
        self._tracks: dict[int, _TrackState] = {}

    def dominant(self, face: Face) -> str | None:
        if face.probs is None:
            return None
        k = int(np.argmax(face.probs))
        return EMOTIONS[k] if float(face.probs[k]) >= self.min_probability else None

    def update(self, frame: int, t: float, faces) -> list[tuple[Face, Episode]]:
        """One analysis: the faces to save now, each with its episode (whose `saved` already counts it)."""
        present = set()
        out = []
        for face in faces:
            if face.track_id is None:
                continue
            present.add(face.track_id)
            state = self._tracks.setdefault(face.track_id, _TrackState())
            label = self.dominant(face)
            state.run = state.run + 1 if label == state.candidate else 1
            state.candidate = label
            episode = state.episode
            if label is not None and state.run >= self.start_after and (episode is None or episode.label != label):
                episode = state.episode = Episode(self.next_id, face.track_id, label, frame, t)
                self.next_id += 1
            if episode is not None and label == episode.label and self._due(episode, frame, t):
                episode.last_saved_frame, episode.last_saved_t = frame, t
                episode.saved += 1
                out.append((face, episode))
        for track in [k for k in self._tracks if k not in present]:  # the face left: its episode ends
            del self._tracks[track]
        return out

    def _due(self, episode: Episode, frame: int, t: float) -> bool:
        if episode.last_saved_frame is None:
            return True
        if self.per_second is not None:
            return t - episode.last_saved_t >= 1.0 / self.per_second - 1e-9
        return frame - episode.last_saved_frame >= self.every_n_frames

    def reset(self) -> None:
        """Export stopped: every episode ends; ids keep counting so they stay unique in the session."""
        self._tracks.clear()

    @property
    def episodes(self) -> list[Episode]:
        return [s.episode for s in self._tracks.values() if s.episode is not None]
