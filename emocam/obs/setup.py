"""`emocam obs setup`: a scene "EmoCam: <preset>" per preset, each showing the EmoCam virtual camera.

One Video Capture Device source, shared by all those scenes, reads the loopback device EmoCam publishes to.
Only what is missing is created, so running it again changes nothing.
"""

from __future__ import annotations

from obsws_python.error import OBSSDKRequestError

from emocam.errors import EmoCamError
from emocam.obs.client import request
from emocam.obs.config import SCENE_PREFIX, ObsConfig

CAMERA_SOURCE = "EmoCam camera"
DEFAULT_DEVICE = "/dev/video10"
# Video capture input kinds by platform, and the setting holding the device where we know it (Linux: a path).
CAPTURE_KINDS = {"v4l2_input": "device_id", "dshow_input": None, "av_capture_input": None}


class ObsSetup:
    def __init__(self, req, cfg: ObsConfig):
        self.req, self.cfg = req, cfg
        self.changes: list[str] = []

    def _call(self, name: str, data: dict | None = None) -> dict:
        try:
            return request(self.req, self.cfg, name, data)
        except OBSSDKRequestError as exc:
            raise EmoCamError(f"OBS refused {name}: {exc}") from None

    def run(self, presets: list[str], device: str) -> list[str]:
        """Create what is missing; returns one line per change (none when everything was there)."""
        kinds = self._call("GetInputKindList", {"unversioned": True}).get("inputKinds", [])
        kind = next((k for k in CAPTURE_KINDS if k in kinds), None)
        if kind is None:
            raise EmoCamError(f"this OBS offers no video capture source ({', '.join(CAPTURE_KINDS)}); "
                              "is its video capture plugin installed?")
        inputs = {i["inputName"]: i for i in self._call("GetInputList").get("inputs", [])}
        existing = inputs.get(CAMERA_SOURCE)
        if existing is not None and existing.get("unversionedInputKind", existing.get("inputKind")) != kind:
            raise EmoCamError(f"OBS already has a source named {CAMERA_SOURCE!r} of kind {existing.get('inputKind')!r}"
                              f", not a video capture device ({kind}): rename or remove it and run this again")
        scenes = {s["sceneName"] for s in self._call("GetSceneList").get("scenes", [])}
        video = self._call("GetVideoSettings")
        canvas = (video.get("baseWidth", 1920), video.get("baseHeight", 1080))
        device_key = CAPTURE_KINDS[kind]
        settings = {device_key: device} if device_key else {}

        for preset in presets:
            scene = SCENE_PREFIX + preset
            if scene not in scenes:
                if scene in inputs:
                    raise EmoCamError(f"OBS has a source named {scene!r} that is not a scene: rename it")
                self._call("CreateScene", {"sceneName": scene})
                self.changes.append(f"created scene {scene!r}")
            if existing is None:
                item = self._call("CreateInput", {"sceneName": scene, "inputName": CAMERA_SOURCE, "inputKind": kind,
                                                  "inputSettings": settings, "sceneItemEnabled": True})
                existing = {"inputName": CAMERA_SOURCE, "inputKind": kind}
                where = f" reading {device}" if device_key else ""
                self.changes.append(f"created source {CAMERA_SOURCE!r} ({kind}{where}) in {scene!r}")
                self._fit(scene, item["sceneItemId"], canvas)
                continue
            items = self._call("GetSceneItemList", {"sceneName": scene}).get("sceneItems", [])
            if not any(i.get("sourceName") == CAMERA_SOURCE for i in items):
                item = self._call("CreateSceneItem", {"sceneName": scene, "sourceName": CAMERA_SOURCE})
                self.changes.append(f"added {CAMERA_SOURCE!r} to {scene!r}")
                self._fit(scene, item["sceneItemId"], canvas)

        if device_key:
            current = self._call("GetInputSettings", {"inputName": CAMERA_SOURCE}).get("inputSettings", {})
            if current.get(device_key) != device:
                self._call("SetInputSettings", {"inputName": CAMERA_SOURCE, "inputSettings": {device_key: device}})
                self.changes.append(f"pointed {CAMERA_SOURCE!r} at {device} (was {current.get(device_key)!r})")
        return self.changes

    def _fit(self, scene: str, item_id: int, canvas: tuple[int, int]) -> None:
        """Scale the camera to fill the canvas, keeping its aspect, whatever size it turns out to have."""
        self._call("SetSceneItemTransform", {"sceneName": scene, "sceneItemId": item_id, "sceneItemTransform": {
            "positionX": 0.0, "positionY": 0.0, "alignment": 5, "boundsType": "OBS_BOUNDS_SCALE_INNER",
            "boundsAlignment": 0, "boundsWidth": float(canvas[0]), "boundsHeight": float(canvas[1])}})
