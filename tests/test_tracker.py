"""Face identities across analysed frames: matching, smoothing and ageing out."""

from dataclasses import replace

import numpy as np

from emocam.tracker import Tracker
from emocam.types import Face


def face(x: float, happy: float = 0.5) -> Face:
    probs = np.full(7, (1 - happy) / 6, np.float32)
    probs[3] = happy
    return Face(box=np.array([x, 100, x + 80, 180], np.float32), score=0.9, probs=probs)


def test_a_face_keeps_its_id_and_its_probabilities_are_smoothed():
    tracker = Tracker(alpha=0.5)
    (first,) = tracker.update([face(100, happy=0.2)], 0.0)
    (second,) = tracker.update([face(104, happy=0.8)], 0.04)
    assert second.track_id == first.track_id
    assert np.isclose(second.probs[3], 0.5)


def test_a_face_that_left_ages_out_even_when_only_classified_between_detections():
    # detect_interval > 1: between detections the pipeline classifies the tracks themselves again (same boxes)
    tracker = Tracker(max_age_s=0.5)
    tracker.update([face(100)], 0.0)
    t = 0.0
    for i in range(1, 60):  # 2 s at 30 analyses a second; the detector (every 3rd) no longer sees the face
        t = i / 30
        detected = i % 3 == 0
        tracked = [] if detected else [replace(f, track_id=None) for f in tracker.active]
        tracker.update(tracked, t, detected)
    assert tracker.active == []


def test_classifying_tracks_between_detections_updates_them_without_new_tracks():
    tracker = Tracker(alpha=1.0)
    (seen,) = tracker.update([face(100, happy=0.2)], 0.0)
    (again,) = tracker.update([face(100, happy=0.9)], 0.03, detected=False)
    assert again.track_id == seen.track_id and np.isclose(again.probs[3], 0.9)
    assert tracker.update([face(400)], 0.06, detected=False) == [again]  # no sighting, no new track
