"""`emocam report`: one HTML page with PNG figures about a recorded session (and its export, and an expert's
annotation when given)."""

from __future__ import annotations

import html
import json
from collections import Counter
from pathlib import Path

import numpy as np

from emocam.export.exporter import LINK
from emocam.report import figures
from emocam.report.session_log import SessionLog, load_session_log, read_truth, truth_at
from emocam.types import EMOTIONS


def cohen_kappa(confusion: np.ndarray) -> float | None:
    """Agreement beyond chance between the rows' and the columns' labelling; None when chance explains all."""
    confusion = np.asarray(confusion, dtype=np.float64)
    n = confusion.sum()
    if n == 0:
        return None
    observed = np.trace(confusion) / n
    expected = float((confusion.sum(axis=0) * confusion.sum(axis=1)).sum()) / n ** 2
    return None if expected >= 1.0 else float((observed - expected) / (1.0 - expected))


def find_export(session_dir: Path) -> Path | None:
    link = session_dir / LINK
    if not link.is_file():
        return None
    path = Path(json.loads(link.read_text())["export_session"])
    return path if path.is_dir() else None


def build_report(session_dir: Path, out: Path, truth: Path | None = None, export: Path | None = None) -> dict:
    session_dir = Path(session_dir)
    log = load_session_log(session_dir)
    fig_dir = out.parent / f"{out.stem}_figures"
    figs: dict[str, Path] = {}
    notes: list[str] = []
    faces = log.faces
    labels = Counter(f.label for f in faces if f.label is not None)
    tracks = log.tracks()
    result: dict = {
        "session": str(session_dir), "report": str(out), "frames": log.frames, "duration_s": round(log.duration, 3),
        "analyses": len(log.analyses), "faces": len(faces), "tracks": sorted(tracks),
        "per_class": {n: labels.get(n, 0) for n in EMOTIONS},
    }
    if tracks:
        figs["timeline"] = figures.timeline(tracks, fig_dir / "timeline.png", log.duration)
        figs["class_distribution"] = figures.class_distribution(
            labels, fig_dir / "class_distribution.png", "predicted class per analysed face", "analysed faces")
    else:
        notes.append("No classified face in the session log: no timeline and no class distribution.")

    _activation_figures(log, fig_dir, figs, notes)

    export = export or find_export(session_dir)
    if export is not None:
        result["export"] = _hog_figures(export, fig_dir, figs, notes)
    else:
        notes.append(f"No export for this session ({LINK} absent and no --export given): no HOG histograms.")

    if truth is not None:
        result["agreement"] = _agreement(log, read_truth(truth), fig_dir, figs, notes)
    result["figures"] = {k: str(v) for k, v in figs.items()}
    result["notes"] = notes
    _write_html(out, result, figs)
    return result


def _activation_figures(log: SessionLog, fig_dir: Path, figs: dict, notes: list) -> None:
    with_layers = [f for f in log.faces if f.layers]
    if not with_layers:
        notes.append("The session log holds no per-layer statistics (faces[i].layers or .maps, written when the "
                     "explain stage runs): no activation figures.")
        return
    names = list(dict.fromkeys(name for f in with_layers for name in f.layers))
    values = [np.array([f.layers[n] for f in with_layers if n in f.layers]) for n in names]
    figs["layer_magnitude"] = figures.layer_magnitude(names, values, fig_dir / "layer_magnitude.png", log.layer_key)
    last = names[-1]
    per_class = {}
    for f in with_layers:
        if f.label is not None and last in f.layers:
            per_class.setdefault(f.label, []).append(f.layers[last])
    if per_class:
        figs["class_activation_histograms"] = figures.class_activation_histograms(
            {k: np.array(v) for k, v in per_class.items()}, last, fig_dir / "class_activation_histograms.png",
            log.layer_key)


def _hog_figures(export: Path, fig_dir: Path, figs: dict, notes: list) -> dict:
    from emocam.export.dataset import find_sessions, summarize

    summary = summarize(find_sessions(export))
    counts = {n: v["patches"] for n, v in summary["per_class"].items()}
    episodes = {n: v["episodes"] for n, v in summary["per_class"].items()}
    if summary["patches"]:
        figs["export_classes"] = figures.class_distribution(
            counts, fig_dir / "export_classes.png", f"exported patches ({export.name})", "patches", episodes,
            "episodes")
    hog = summary["hog"]
    if hog and hog["per_class_histogram"]:
        figs["hog_histograms"] = figures.hog_histograms(
            hog["per_class_histogram"], hog["orientations"], fig_dir / "hog_histograms.png",
            "mean HOG orientation histogram of the exported patches, per class")
    else:
        notes.append(f"The export {export} holds no patches: no HOG histograms.")
    return {"path": str(export), **summary}


def _agreement(log: SessionLog, truth, fig_dir: Path, figs: dict, notes: list) -> dict:
    from emocam.evaluate.classification import confusion_matrix
    from emocam.evaluate.plots import plot_confusion

    y_true, y_pred, no_face = [], [], 0
    for t, label in log.main_labels():
        expected = truth_at(truth, t)
        if expected is None:
            continue
        if label is None:
            no_face += 1
            continue
        y_true.append(EMOTIONS.index(expected))
        y_pred.append(EMOTIONS.index(label))
    if not y_true:
        notes.append("No analysed face falls inside an annotated interval: no agreement figures.")
        return {"n": 0, "no_face": no_face}
    cm = confusion_matrix(y_true, y_pred, len(EMOTIONS))
    kappa = cohen_kappa(cm)
    figs["confusion"] = plot_confusion(cm, EMOTIONS, fig_dir / "confusion.png",
                                       "expert (rows) vs. model (columns), per analysed frame")
    return {"n": len(y_true), "no_face": no_face, "accuracy": round(float(np.trace(cm)) / len(y_true), 4),
            "kappa": None if kappa is None else round(kappa, 4), "confusion": cm.tolist()}


TITLES = {
    "timeline": "Emotion timeline per track",
    "class_distribution": "Class distribution",
    "layer_magnitude": "Activation magnitude per layer",
    "class_activation_histograms": "Activation histograms per class",
    "export_classes": "Exported patches and episodes per class",
    "hog_histograms": "HOG orientation histograms per class",
    "confusion": "Agreement with the expert annotation",
}


def _write_html(out: Path, result: dict, figs: dict) -> None:
    e = html.escape
    rows = [("session", result["session"]), ("recorded frames", result["frames"]),
            ("duration", f"{result['duration_s']:.2f} s"), ("analyses", result["analyses"]),
            ("analysed faces", result["faces"]), ("tracks", ", ".join(map(str, result["tracks"])) or "none")]
    if "export" in result:
        x = result["export"]
        rows += [("export", x["path"]), ("exported patches", x["patches"]), ("episodes", x["episodes"])]
    if "agreement" in result:
        a = result["agreement"]
        rows += [("annotated frames compared", a["n"]), ("annotated frames without a face", a["no_face"])]
        if a["n"]:
            rows += [("accuracy", f"{a['accuracy']:.3f}"),
                     ("Cohen's kappa", "n/a" if a["kappa"] is None else f"{a['kappa']:.3f}")]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>EmoCam report: {e(Path(result['session']).name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}img{max-width:100%}"
        ".note{color:#8a5a00}</style></head><body>",
        f"<h1>EmoCam session report: {e(Path(result['session']).name)}</h1>",
        "<table>" + "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in rows) + "</table>",
        "<h2>Predicted classes</h2><table><tr><th>class</th><th>analysed faces</th></tr>"
        + "".join(f"<tr><td>{n}</td><td>{c}</td></tr>" for n, c in result["per_class"].items()) + "</table>",
    ]
    for key, path in figs.items():
        rel = path.relative_to(out.parent) if path.is_relative_to(out.parent) else path
        parts.append(f"<h2>{e(TITLES.get(key, key))}</h2><img src='{e(rel.as_posix())}' alt='{e(key)}'>")
    if result["notes"]:
        parts.append("<h2>Notes</h2><ul>" + "".join(f"<li class='note'>{e(n)}</li>" for n in result["notes"])
                     + "</ul>")
    parts.append("</body></html>")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".part")
    tmp.write_text("\n".join(parts), encoding="utf-8")
    tmp.replace(out)
