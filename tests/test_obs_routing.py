"""OBS control without OBS: command parsing and routing, scene -> preset rules, [obs] config errors, the password
kept secret, the recorder following Control.recording, and the supervisor facing a closed port."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from loguru import logger

from emocam.commands.ctl import command_from_words
from emocam.config import load_config
from emocam.control import Control, ControlState
from emocam.errors import ConfigError, EmoCamError
from emocam.obs.client import (EventsClient, ObsAuthError, ObsUnavailable, RequestClient, describe, open_requests,
                               unexpected)
from emocam.obs.commands import CommandError, Router, check_config, parse_command, preset_for_scene
from emocam.obs.config import PASSWORD_ENV, ObsConfig
from obs_server import free_port

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("clean", "boxes", "emotions", "status")
ANNOTATORS = ("boxes", "labels", "bars", "status")
SECRET = "hunter2-not-for-logs"


def router(**cfg) -> Router:
    return Router(ControlState(Control("emotions")), ObsConfig(**cfg), lambda: PRESETS, ANNOTATORS, "emotions")


@pytest.fixture
def logs():
    lines: list[str] = []
    sink = logger.add(lines.append, level="DEBUG", format="{level} {message}")
    yield lines
    logger.remove(sink)


# ---------------------------------------------------------------- commands


def test_commands_apply_to_the_control_state_and_are_acknowledged():
    r = router()
    ack = r.apply({"preset": "boxes", "id": "a1"})
    assert ack == {"ok": True, "id": "a1", "applied": {"preset": "boxes"},
                   "state": {"preset": "boxes", "hidden": [], "selection": {}, "recording": False, "exporting": False}}
    assert r.apply({"toggle": "bars"})["state"]["hidden"] == ["bars"]
    assert r.apply({"toggle": "bars"})["state"]["hidden"] == []
    assert r.apply({"hide": "labels"})["state"]["hidden"] == ["labels"]
    assert r.apply({"hide": "labels"})["state"]["hidden"] == ["labels"]  # hide is not a toggle
    assert r.apply({"show": "labels"})["state"]["hidden"] == []
    r.apply({"layer": 3, "class": "happy"})
    assert r.control.get().selection == {"layer": 3, "class": "happy"}
    r.apply({"layer": None})
    assert r.control.get().selection == {"class": "happy"}
    r.apply({"export": "start", "record": "start"})
    assert r.control.get().exporting and r.control.get().recording
    r.apply({"record": "stop"})
    assert not r.control.get().recording and r.control.get().exporting


@pytest.mark.parametrize("command, message", [
    ({"preset": "heatmap"}, "preset: no preset 'heatmap'"),
    ({"toggle": "histograms"}, "toggle: no annotator 'histograms'"),
    ({"layer": -1}, "layer: expected a layer index"),
    ({"layer": "3"}, "layer: expected a layer index"),
    ({"layer": True}, "layer: expected a layer index"),
    ({"class": "joy"}, "class: expected one of angry, "),
    ({"record": "on"}, 'record: expected "start" or "stop"'),
    ({"export": True}, 'export: expected "start" or "stop"'),
    ({"zoom": 2}, "unknown command 'zoom'"),
    ({}, "empty command"),
    ({"id": "x"}, "empty command"),
    ("preset", "a command is an object"),
    (None, "a command is an object"),
])
def test_invalid_commands_are_rejected_with_a_reason(command, message):
    r = router()
    with pytest.raises(CommandError, match=message.replace("(", r"\(")):
        r.apply(command)
    assert r.control.get() == Control("emotions")


def test_a_command_applies_all_of_its_keys_or_none():
    r = router()
    with pytest.raises(CommandError, match="no annotator 'nope'"):
        r.apply({"preset": "boxes", "toggle": "nope", "record": "start"})
    assert r.control.get() == Control("emotions")


def test_presets_are_asked_for_each_time_so_a_reload_counts():
    presets = {"clean", "emotions"}
    r = Router(ControlState(Control("emotions")), ObsConfig(), lambda: presets, ANNOTATORS, "emotions")
    with pytest.raises(CommandError):
        r.apply({"preset": "heatmap"})
    presets.add("heatmap")  # what SIGHUP does when overlays/heatmap.toml appears
    assert r.apply({"preset": "heatmap"})["state"]["preset"] == "heatmap"


# ---------------------------------------------------------------- scenes and filters


@pytest.mark.parametrize("unmapped, scene, expected", [
    ("keep", "EmoCam: boxes", "boxes"),
    ("keep", "Interview", "clean"),  # mapped wins
    ("keep", "EmoCam: clean", "clean"),
    ("keep", "Be right back", None),
    ("keep", "EmoCam: heatmap", None),  # no such preset: an ordinary unmapped scene
    ("keep", "emocam: boxes", None),  # the prefix is exact
    ("default", "Be right back", "emotions"),
    ("status", "Be right back", "status"),
])
def test_scene_selects_a_preset(unmapped, scene, expected):
    cfg = ObsConfig(scenes={"Interview": "clean"}, unmapped_scenes=unmapped)
    assert preset_for_scene(scene, cfg, PRESETS, "emotions") == expected


def test_scene_changes_drive_the_control_state():
    r = router(scenes={"Talk": "boxes"}, unmapped_scenes="keep")
    assert r.on_scene("EmoCam: clean") == "clean" and r.control.get().preset == "clean"
    assert r.on_scene("Desktop") is None and r.control.get().preset == "clean"
    assert r.on_scene("Talk") == "boxes" and r.control.get().preset == "boxes"
    r = router(unmapped_scenes="default")
    r.on_scene("EmoCam: clean")
    assert r.on_scene("Desktop") == "emotions" and r.control.get().preset == "emotions"


def test_a_mapped_filter_shows_and_hides_its_annotator():
    r = router(filters={"EmoCam bars": "bars"})
    assert r.on_filter("EmoCam bars", False) == "bars" and r.control.get().hidden == {"bars"}
    assert r.on_filter("Colour correction", False) is None and r.control.get().hidden == {"bars"}
    assert r.on_filter("EmoCam bars", True) == "bars" and r.control.get().hidden == frozenset()


# ---------------------------------------------------------------- configuration


def test_config_names_the_unknown_preset_or_annotator():
    with pytest.raises(ConfigError, match=r"obs.scenes.'Interview': no preset 'heatmap' \(presets: boxes, clean"):
        check_config(ObsConfig(scenes={"Interview": "heatmap"}), PRESETS, ANNOTATORS)
    with pytest.raises(ConfigError, match="obs.unmapped_scenes: 'kept' is not"):
        check_config(ObsConfig(unmapped_scenes="kept"), PRESETS, ANNOTATORS)
    with pytest.raises(ConfigError, match="obs.filters.'F': no annotator 'histograms'"):
        check_config(ObsConfig(filters={"F": "histograms"}), PRESETS, ANNOTATORS)
    check_config(ObsConfig(scenes={"Interview": "boxes"}, unmapped_scenes="clean", filters={"F": "bars"}),
                 PRESETS, ANNOTATORS)


def test_obs_section_is_strict(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text("[obs]\nenabled = true\npasword = 'x'\n")
    with pytest.raises(ConfigError, match="obs.pasword: unknown key"):
        load_config(path)
    path.write_text("[obs]\nport = 70000\n")
    with pytest.raises(ConfigError, match="obs.port"):
        load_config(path)
    path.write_text("[obs]\nenabled = true\nport = 4456\n[obs.scenes]\n'Live' = 'boxes'\n")
    cfg = load_config(path).obs
    assert cfg.enabled and cfg.port == 4456 and cfg.scenes == {"Live": "boxes"}


def test_integration_refuses_an_obs_mapping_to_a_missing_preset(tmp_path):
    with pytest.raises(ConfigError, match="obs.scenes.'Live': no preset 'heatmapp'"):
        small_pipeline(tmp_path, "obs.scenes={Live = 'heatmapp'}")


def test_password_is_secret_everywhere_but_the_connection(monkeypatch, tmp_path):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    path = tmp_path / "config.toml"
    path.write_text(f"[obs]\npassword = '{SECRET}'\n")
    cfg = load_config(path)
    assert cfg.obs.secret() == SECRET
    for text in (repr(cfg), str(cfg), repr(cfg.obs), cfg.model_dump_json(), json.dumps(cfg.model_dump(mode="json"))):
        assert SECRET not in text
    monkeypatch.setenv(PASSWORD_ENV, "from-the-environment")
    assert cfg.obs.secret() == "from-the-environment"  # the environment wins, so the file can do without
    assert ObsConfig().secret() == "from-the-environment"


def test_connection_errors_never_carry_the_password(monkeypatch):
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    port = free_port()  # nothing listens there
    with pytest.raises(ObsUnavailable, match=f"OBS not reachable at 127.0.0.1:{port}: ConnectionRefusedError") as err:
        open_requests(ObsConfig(host="127.0.0.1", port=port, password=SECRET, timeout_s=1))
    assert not isinstance(err.value, ObsAuthError) and isinstance(err.value, EmoCamError)
    assert SECRET not in str(err.value) and err.value.__cause__ is None
    leaky = RuntimeError(f"EventClient(password='{SECRET}')")
    assert describe(leaky, SECRET) == "RuntimeError: EventClient(password='***')"


def test_clients_and_tracebacks_do_not_show_the_password():
    """obsws-python's own reprs include the password; a traceback printing variables would show it."""
    for cls in (RequestClient, EventsClient):
        client = cls.__new__(cls)
        client.base_client = SimpleNamespace(host="obs.local", port=4455, password=SECRET)
        assert repr(client) == str(client) == f"{cls.__name__}(obs.local:4455)"
    try:
        raise RuntimeError(f"bad answer to password {SECRET}")
    except RuntimeError as exc:
        text = unexpected(exc, SECRET)
    assert "Traceback" in text and "bad answer to password ***" in text and SECRET not in text


# ---------------------------------------------------------------- ctl arguments


@pytest.mark.parametrize("words, command", [
    (["preset", "emotions"], {"preset": "emotions"}),
    (["layer", "3"], {"layer": 3}),
    (["layer=null", "class=happy"], {"layer": None, "class": "happy"}),
    (["toggle", "bars", "record=start"], {"toggle": "bars", "record": "start"}),
    (['{"emocam": {"preset": "heatmap"}}'], {"preset": "heatmap"}),
    (['{"export": "stop"}'], {"export": "stop"}),
])
def test_ctl_reads_pairs_and_json(words, command):
    assert command_from_words(words) == command


@pytest.mark.parametrize("words, message", [
    (["preset"], "'preset' needs a value"),
    (["zoom", "2"], "unknown command 'zoom'"),
    (["record", "on"], 'record: expected "start" or "stop"'),
    (['{"preset": '], "not valid JSON"),
])
def test_ctl_rejects_bad_commands_before_sending(words, message):
    with pytest.raises(EmoCamError, match=message):
        command_from_words(words)


def test_parse_command_keeps_the_id():
    assert parse_command({"id": 7, "preset": "x"}) == {"id": 7, "preset": "x"}


# ---------------------------------------------------------------- recorder and supervisor in a real pipeline


def small_pipeline(tmp_path, *extra):
    from emocam.daemon import build_pipeline
    from emocam.obs.integration import ObsIntegration

    cfg = load_config(ROOT / "config.toml", [
        "source.name=demo", "source.demo.width=320", "source.demo.height=180", "sinks.enabled=[]",
        f'session.root="{tmp_path / "sessions"}"', 'sinks.recorder.codec="mjpg"', *extra])
    pipeline = build_pipeline(cfg, analyze=False)
    return pipeline, ObsIntegration(pipeline, cfg)


def test_record_commands_start_and_stop_the_recorder(tmp_path):
    pipeline, obs = small_pipeline(tmp_path)
    pipeline.start()
    obs.start()
    try:
        ack = obs.router.apply({"record": "start"})
        assert ack["state"]["recording"] and "recorder" in pipeline.status()["sinks"]
        time.sleep(0.5)
        ack = obs.router.apply({"record": "stop"})
        assert not ack["state"]["recording"] and "recorder" not in pipeline.status()["sinks"]
        video = pipeline.session_dir / "session.avi"
        assert video.stat().st_size > 1000
    finally:
        obs.stop()
        pipeline.close()


def test_a_recorder_that_cannot_open_leaves_recording_off(tmp_path, logs):
    pipeline, obs = small_pipeline(tmp_path)
    pipeline.start()
    obs.start()
    try:
        pipeline.session_dir.rmdir() if pipeline.session_dir.is_dir() else None
        pipeline.session_dir.write_text("a file where the session folder should be")
        ack = obs.router.apply({"record": "start"})
        assert ack["ok"] and not ack["state"]["recording"] and "recorder" not in pipeline.status()["sinks"]
        assert any(line.startswith("ERROR recording could not start") for line in logs)
    finally:
        obs.stop()
        pipeline.close()


def test_supervisor_without_obs_retries_quietly_and_stops_at_once(tmp_path, logs):
    port = free_port()
    pipeline, obs = small_pipeline(tmp_path, "obs.enabled=true", "obs.host=127.0.0.1", f"obs.port={port}",
                                   "obs.retry_max_s=1")
    pipeline.start()
    obs.start()
    try:
        time.sleep(2.5)
        status = obs.status()
        assert status["state"] == "unreachable" and status["connects"] == 0
        assert "ConnectionRefusedError" in status["last_error"]
        warnings = [line for line in logs if line.startswith("WARNING OBS")]
        retries = [line for line in logs if line.startswith("DEBUG OBS") and "next try" in line]
        assert len(warnings) == 1 and len(retries) >= 2, logs
        assert pipeline.status()["frames_out"] > 40  # 30 fps went on meanwhile
        t0 = time.monotonic()
        obs.stop()
        assert time.monotonic() - t0 < 1.0 and obs.status()["state"] == "stopped"
    finally:
        obs.stop()
        pipeline.close()


def test_status_says_when_obs_is_off(tmp_path):
    pipeline, obs = small_pipeline(tmp_path)
    assert obs.supervisor is None and obs.status() == {"enabled": False, "state": "disabled"}


def test_the_same_unexpected_connect_failure_is_logged_in_full_once(monkeypatch):
    from emocam.obs import supervisor as supervisor_module

    backoff = supervisor_module.Backoff
    monkeypatch.setattr(supervisor_module, "Backoff", lambda first, most: backoff(0.01, 0.01))
    supervisor = supervisor_module.ObsSupervisor(ObsConfig(), router())
    attempts = []

    def odd_answer():
        attempts.append(1)
        raise ValueError("OBS said something odd")

    supervisor._connect = odd_answer
    lines: list[tuple[str, str]] = []
    sink = logger.add(lambda m: lines.append((m.record["level"].name, m.record["message"])), level="DEBUG")
    try:
        supervisor.start()
        deadline = time.monotonic() + 5
        while len(attempts) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        supervisor.stop()
    finally:
        logger.remove(sink)
    assert len(attempts) >= 5
    errors = [m for level, m in lines if level == "ERROR"]
    assert len(errors) == 1 and "Traceback" in errors[0] and "OBS said something odd" in errors[0]
    assert supervisor.status()["last_error"] == "ValueError: OBS said something odd"
