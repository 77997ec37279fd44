"""`emocam service`: the systemd user unit that runs the daemon in the background."""

import shutil
import subprocess
from pathlib import Path

import pytest

from emocam.cli import main

ROOT = Path(__file__).resolve().parents[1]


def unit(tmp_path, capsys, config: Path, *sets: str) -> str:
    args = ["--config", str(config)]
    for override in sets:
        args += ["--set", override]
    assert main([*args, "service", "show"]) == 0
    text = capsys.readouterr().out
    (tmp_path / "emocam.service").write_text(text)
    return text


def test_the_unit_runs_with_the_same_settings_but_never_holds_the_obs_password(tmp_path, capsys):
    text = unit(tmp_path, capsys, ROOT / "config.toml", "runtime.device=cpu", 'obs.password="s3cret-pw"')
    exec_start = next(line for line in text.splitlines() if line.startswith("ExecStart="))
    assert exec_start.endswith("--set runtime.device=cpu run")
    assert "s3cret-pw" not in text and "obs.password" not in text
    assert "EnvironmentFile=-%h/.config/emocam/env" in text  # where EMOCAM_OBS_PASSWORD goes


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_unit_is_valid_for_systemd_whatever_the_config_path(tmp_path, capsys):
    folder = tmp_path / "cams 100% $HOME"  # a space, a % (systemd specifier) and a $ (variable)
    folder.mkdir()
    config = folder / "config.toml"
    config.write_text((ROOT / "config.toml").read_text())
    text = unit(tmp_path, capsys, config)
    assert "cams 100%% $HOME\n" in text  # WorkingDirectory: no variables there
    assert "cams 100%% $$HOME/config.toml" in text  # ExecStart
    done = subprocess.run(["systemd-analyze", "verify", str(tmp_path / "emocam.service")], capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
