from pathlib import Path

import pytest
from loguru import logger

from emocam.cli import main
from emocam.config import Config, load_config
from emocam.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(text)
    return path


def test_shipped_config_equals_defaults():
    shipped, default = load_config(ROOT / "config.toml"), Config()

    def plain(cfg):  # backend option tables are extras; compare them one by one below
        return {k: {f: v for f, v in sec.items() if f in type(getattr(cfg, k)).model_fields}
                if isinstance(sec, dict) else sec for k, sec in cfg.model_dump().items()}

    assert plain(shipped) == plain(default)
    for section in ("detector", "classifier", "source", "sinks"):
        for name, options in (getattr(shipped, section).model_extra or {}).items():
            assert options == getattr(default, section).options(name), f"[{section}.{name}]"


def test_unknown_key_names_key_and_file(tmp_path):
    path = write(tmp_path, "[runtime]\ndevise = 'cpu'\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "runtime.devise" in str(err.value) and str(path) in str(err.value) and "unknown key" in str(err.value)


def test_unknown_section(tmp_path):
    with pytest.raises(ConfigError, match="detektor: unknown key"):
        load_config(write(tmp_path, "[detektor]\nname = 'mtcnn'\n"))


def test_wrong_type_names_key(tmp_path):
    with pytest.raises(ConfigError, match="runtime.torch_threads"):
        load_config(write(tmp_path, "[runtime]\ntorch_threads = 'many'\n"))


def test_unknown_backend_lists_available(tmp_path):
    with pytest.raises(ConfigError, match="unknown detector 'yolo9000'; available: .*mtcnn"):
        load_config(write(tmp_path, "[detector]\nname = 'yolo9000'\n"))


def test_backend_option_table_is_strict(tmp_path):
    with pytest.raises(ConfigError, match="min_face_sise"):
        load_config(write(tmp_path, "[detector.mtcnn]\nmin_face_sise = 20\n"))


def test_backend_options_are_typed(tmp_path):
    cfg = load_config(write(tmp_path, "[detector]\nname = \"mtcnn\"\n[detector.mtcnn]\nmin_face_size = 80\n"))
    assert cfg.detector.options().min_face_size == 80
    assert load_config(write(tmp_path, "")).detector.options().search_every == 12  # the default, centerface-track


def test_bad_toml(tmp_path):
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[runtime\n"))


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_overrides(tmp_path):
    cfg = load_config(write(tmp_path, ""), ["runtime.torch_threads=4", "logging.level=DEBUG"])
    assert cfg.runtime.torch_threads == 4 and cfg.logging.level == "DEBUG"
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(write(tmp_path, ""), ["runtime.torch_threads"])


def test_relative_paths_resolve_against_config_file(tmp_path):
    cfg = load_config(write(tmp_path, "[runtime]\nmodels_dir = 'weights'\n"))
    assert cfg.models_dir == (tmp_path / "weights").resolve()


def test_cli_reports_config_error_as_one_line(tmp_path, capsys):
    path = write(tmp_path, "[runtime]\ndevise = 'cpu'\n")
    assert main(["--config", str(path), "models", "list"]) == 2
    err = capsys.readouterr().err
    assert "runtime.devise: unknown key" in err and "Traceback" not in err


def test_cli_reports_unusable_paths_as_one_line(tmp_path, capsys):
    assert main(["--config", str(tmp_path), "models", "list"]) == 2  # a folder, not a file
    err = capsys.readouterr().err
    assert err.startswith(f"emocam: error: config file {tmp_path}: Is a directory; point --config at")
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    log_file = tmp_path / "no" / "such" / "folder" / "emocam.log"
    (tmp_path / "no").write_text("a file where a folder should be")
    assert main(["--config", str(write(tmp_path, "")), "--set", f'logging.file="{log_file}"', "run"]) == 2
    err = capsys.readouterr().err
    assert f"emocam: error: {tmp_path / 'no'}" in err and "check the path" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_errors_in_a_backend_table_name_the_table(tmp_path):
    # several backends have a `width`: the message must say whose
    with pytest.raises(ConfigError, match=r"source\.camera\.widht: unknown key"):
        load_config(write(tmp_path, ""), ["source.camera.widht=5"])
    with pytest.raises(ConfigError, match=r"source\.video\.width: Input should be greater than or equal to 16"):
        load_config(write(tmp_path, ""), ["source.video.width=5"])
    with pytest.raises(ConfigError, match="virtualcam must be a table of the virtualcam sink's options"):
        load_config(write(tmp_path, ""), ["sinks.virtualcam=3"])


def test_only_the_daemon_logs_into_the_file_next_to_its_config(tmp_path, models_dir, monkeypatch):
    monkeypatch.setenv("EMOCAM_MODELS", str(models_dir))
    (tmp_path / "cfg").mkdir()
    config = tmp_path / "cfg" / "config.toml"
    config.write_text(f'[logging]\nfile = "logs/emocam.log"\n[output]\npresets_dir = "{ROOT / "overlays"}"\n')
    monkeypatch.chdir(tmp_path)  # elsewhere than the config
    assert main(["--config", str(config), "models", "list"]) == 0
    assert not (tmp_path / "cfg" / "logs").exists() and not (tmp_path / "logs").exists()
    assert main(["--config", str(config), "--set", f'session.root="{tmp_path / "sessions"}"', "--set",
                 f'daemon.status_file="{tmp_path / "status.json"}"', "run", "--source", "demo", "--no-vcam",
                 "--seconds", "0.5"]) == 0
    logger.complete()  # the file sink writes from a queue
    assert "stopped:" in (tmp_path / "cfg" / "logs" / "emocam.log").read_text()
