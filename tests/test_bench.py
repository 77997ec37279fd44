"""`emocam bench` drives the real pipeline; here only that it runs and reports its fields (speed is not asserted)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bench(data_dir, *args, source="eval/videos/pyfeat_single_face.mp4"):
    path = data_dir / source
    if not path.is_file():
        pytest.skip(f"{path} is missing")
    out = subprocess.run([sys.executable, "-m", "emocam", "-q", "--config", str(ROOT / "config.toml"), "bench",
                          "--source", str(path), "--width", "640", "--height", "360", "--warmup", "1", "--json",
                          *args], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_bench_with_naive_side_by_side(data_dir, models_dir):
    doc = bench(data_dir, "--seconds", "2", "--naive")
    for key in ("output_fps", "inference_hz", "latency_ms_p50", "latency_ms_p95", "cpu_percent", "peak_rss_mb"):
        assert doc[key] is not None and doc[key] >= 0
    assert doc["output_fps"] > 0 and doc["naive"]["output_fps"] > 0
    assert doc["source_kind"] == "video" and doc["faces_mean"] > 0.5 and doc["detect_ms_p50"] > 0
    assert doc["output_fps_ratio_pipeline_over_naive"] == round(doc["output_fps"] / doc["naive"]["output_fps"], 2)


def test_bench_on_a_still_image_sees_its_five_faces(data_dir, models_dir):
    doc = bench(data_dir, "--seconds", "2", source="eval/group_photos/pyfeat_multi_face.jpg")
    assert doc["source_kind"] == "image" and doc["output_fps"] > 0
    assert 4.5 <= doc["faces_mean"] <= 5.5 and doc["faces_last"] == 5
    for stage in ("detect_ms", "classify_ms"):
        assert 0 < doc[f"{stage}_p50"] <= doc[f"{stage}_p95"]


def test_bench_soak_reports_memory_over_time(data_dir, models_dir):
    doc = bench(data_dir, "--minutes", "0.05", "--sample-s", "1")
    assert len(doc["soak"]) == 3
    assert all(row["rss_mb"] > 50 and row["output_fps"] > 0 for row in doc["soak"])
    assert isinstance(doc["rss_growth_after_warmup_percent"], float)


@pytest.mark.parametrize("detector", ["centerface-track", "mtcnn-track", "mtcnn"])
def test_bench_detector_only_times_each_frame(data_dir, models_dir, detector):
    doc = bench(data_dir, "--detector-only", "--seconds", "1", "--fps", "30", "--set", f'detector.name="{detector}"')
    assert (doc["detector"], doc["frames"]) == (detector, 30)
    assert 0.9 <= doc["faces_mean"] <= 1.1
    assert 0 < doc["detect_ms_p50"] <= doc["detect_ms_p95"] <= doc["detect_ms_max"]


def test_kept_meter_keeps_the_run_in_fixed_memory_and_feeds_the_pipeline():
    from emocam.commands.bench import _KeptMeter

    meter = _KeptMeter(capacity=4)
    for i in range(6):
        meter.tick(float(i), 0.01 * i)
    meter.tick(6.0)  # a tick without a duration counts but keeps nothing
    assert meter.kept_count == 4 and meter.kept(2).tolist() == [0.02, 0.03]  # full: later values are not kept
    assert meter.count == 7 and meter.percentile(100) == 0.05  # the pipeline's own meter saw everything
    assert meter.rate(6.0) > 0
