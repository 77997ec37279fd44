#!/usr/bin/env bash
# The repvgg-fer classifier's GPU recipe in one call (models/repvgg_fer.md, "On a GPU"): two bigger
# RepVGG-Plus teachers trained side by side on FER2013, then STUDENTS (default 4) copies of the shipped model
# fine-tuned side by side from its committed training state (INIT) while distilling them online (the teachers see
# every augmented batch: --distill-online), each with its own seed, and the students' last weights averaged into one
# model (`emocam train soup`; the shipped model is such an average of two checkpoints of one run).
# Every run is sized by time (--time-budget), so the whole call fits a fixed lease:
#   TEACHER_S (default 300) and STUDENT_S (default 120) seconds of training, plus ~1 minute of set-up.
# Batches are large because a step's cost on an H200 is host overhead (~30 ms for fer-m, whatever the batch up to
# 1024: 8k images/s at 256, 18k at 512, 27k at 1024; torch.compile no faster), so images/s grow with the batch.
# Inputs: .device/faces.tar.gz (+ .device/whl/ where pydantic or loguru are missing), written by
# scripts/pack_device.py. Results in $OUT (default out/gpu-run): both teachers' weights in float16 as soon as they
# are trained (a call cut short still returns them), then summary.json, the soup's deploy.pt, soup.pt and soup.json,
# every student's last.pt (student-sN.pt, to cook other soups on a CPU), runs.tgz and logs.tgz.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-python3}
PACK=${PACK:-.device}
OUT=${OUT:-out/gpu-run}
WORK=${WORK:-/tmp/emocam-gpu}
DEVICE=${DEVICE:-cuda}
TEACHER_ARCH=${TEACHER_ARCH:-repvggplus-fer-m}
TEACHER_S=${TEACHER_S:-300}
TEACHER_BATCH=${TEACHER_BATCH:-512}
TEACHER_LR=${TEACHER_LR:-0.2}
STUDENT_S=${STUDENT_S:-120}
STUDENT_BATCH=${STUDENT_BATCH:-512}
STUDENT_LR=${STUDENT_LR:-0.04}
DISTILL_WEIGHT=${DISTILL_WEIGHT:-0.7}
STUDENTS=${STUDENTS:-4}
THREADS=${THREADS:-4}
INIT=${INIT:-models/training/repvgg-fer-xw-soup/soup.pt}
if ! [[ "$STUDENTS" =~ ^[1-9][0-9]*$ ]]; then echo "STUDENTS=$STUDENTS: a whole number >= 1" >&2; exit 1; fi
if [ -e "$WORK/teacher-0" ]; then echo "WORK=$WORK holds an earlier run: remove it or set WORK" >&2; exit 1; fi
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd) PACK=$(cd "$PACK" && pwd)  # the end of the script runs in WORK
began=$(date +%s)
say() { echo "[$(( $(date +%s) - began )) s] $*"; }

if [ -d "$PACK/whl" ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$WORK/site" "$PACK"/whl/*.whl
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
tar -xzf "$PACK/faces.tar.gz" -C "$WORK"
say "$(find "$WORK/train" -type f | wc -l) training faces; $($PY -c 'import torch; print("torch", torch.__version__,
  torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA")')"

train() {  # OUT-DIR ARGS...: one run, its log in WORK
  local out=$1; shift
  $PY -m emocam train classifier --data "$WORK/train" --val-labels "$WORK/eval/labels.csv" --device "$DEVICE" \
    --threads "$THREADS" --epochs 1000 --out "$WORK/$out" "$@" > "$WORK/$out.json" 2> "$WORK/$out.log"
}
side_by_side() {  # wait for the background runs; fail if any failed
  local failed=0
  for pid in $(jobs -p); do wait "$pid" || failed=1; done
  if [ "$failed" = 1 ]; then tail -n 5 "$WORK"/*.log; exit 1; fi
}

say "teachers: 2 x $TEACHER_ARCH, ${TEACHER_S} s"
teacher=(--arch "$TEACHER_ARCH" --batch-size "$TEACHER_BATCH" --lr "$TEACHER_LR" --time-budget "$TEACHER_S")
train teacher-0 "${teacher[@]}" --seed 0 &
train teacher-1 "${teacher[@]}" --seed 1 &
side_by_side
for t in teacher-0 teacher-1; do
  $PY -c "import torch, sys; torch.save({k: v.half() for k, v in torch.load(sys.argv[1]).items()}, sys.argv[2])" \
    "$WORK/$t/deploy.pt" "$OUT/$t-fp16.pt"
done
say "teachers: $(grep -ho '"val_acc": [0-9.]*' "$WORK"/teacher-*.json | tr '\n' ' ')"

STUDENT_ARCH=$($PY -c "import torch, sys; s = torch.load(sys.argv[1], weights_only=True)
print(s.get('arch') or s['recipe']['arch'])" "$INIT")  # best.pt and soup.pt name it, last.pt in its recipe
say "students: $STUDENTS x $STUDENT_ARCH from $INIT, distilled online, ${STUDENT_S} s"
student=(--arch "$STUDENT_ARCH" --init "$INIT" --batch-size "$STUDENT_BATCH" --lr "$STUDENT_LR" --weight-decay 1e-4
         --erase-prob 0.25 --label-smoothing 0.05
         --teacher "$WORK/teacher-0/deploy.pt" --teacher "$WORK/teacher-1/deploy.pt"
         --set "runtime.device=$DEVICE" --distill-weight "$DISTILL_WEIGHT" --distill-online --time-budget "$STUDENT_S")
students=()
for ((s = 0; s < STUDENTS; s++)); do
  train "student-s$s" "${student[@]}" --seed "$s" &
  students+=("student-s$s")
done
side_by_side
for s in "${students[@]}"; do cp "$WORK/$s/last.pt" "$OUT/$s.pt"; done

say "soup of the students' last weights"
cd "$WORK"
$PY -m emocam train soup "${students[@]/%//last.pt}" --data train --val-labels eval/labels.csv --threads "$THREADS" \
  --out soup > soup.json 2> soup.log || { tail -n 5 soup.log; exit 1; }
cp soup/deploy.pt soup/soup.pt soup/soup.json "$OUT/"
$PY - "${students[@]}" > "$OUT/summary.json" <<'PY'
import json, sys
runs = ["teacher-0", "teacher-1", *sys.argv[1:]]
soup = json.load(open("soup.json"))
print(json.dumps({**{r: json.load(open(f"{r}.json"))["best"] for r in runs},
                  "soup": {k: soup[k] for k in ("val_acc", "val_macro_f1")}}, indent=1))
PY
tar -czf "$OUT/runs.tgz" ./*.json ./*/metrics.csv
for log in ./*.log; do tr '\r' '\n' < "$log" | { grep -v '%)' || true; } | tail -n 200 > "$log.tail"; done
tar -czf "$OUT/logs.tgz" ./*.log.tail
cat "$OUT/summary.json"
say "done"
