#!/usr/bin/env bash
# One script for a CUDA machine (issue "GPU: verify every CUDA path"); dry-runs on a CPU machine,
# where every CUDA part is skipped with a message. Run from the repository root:
#
#     bash benchmarks/gpu_check.sh [OUT.json]        (default outputs/gpu_check.json)
#
# Steps, each bounded by a timeout so that the whole stays within ~8 minutes on a GPU:
#   1. make install (torchsort's CUDA build when nvcc and the CUDA runtime are both present);
#   2. pytest -m cuda (the CUDA BEV-IoU kernel against the CPU path, the evaluator on CUDA);
#   3. benchmarks/bench_gpu.py: evaluator CUDA vs CPU on 3769 frames (identical APs, both times),
#      30 timed training steps of the student and MonoMMKD at 1280x384, batch 16, in
#      fp32 / bf16 / fp16, eager / channels_last / torch.compile: images/s and peak memory;
#   4. a `torchrun --nproc_per_node 1` run (NCCL on CUDA) of a few iterations with evaluation;
#   5. benchmarks/bench_infer.py: inference images/s per backend (fp32/fp16/bf16 on the GPU).
# Every step's status and output tail, and bench_gpu.py's JSON, end up in one JSON file.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-outputs/gpu_check.json}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$(dirname "$OUT")"
PY=.venv/bin/python
# Spinning OpenMP threads make CPU steps ~10x slower when other jobs share the cores (README).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
QUICK=()
if ! command -v nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: no nvidia-smi: CPU dry run (CUDA parts are skipped, sizes are tiny)"
  QUICK=(--quick)
fi

# run NAME SECONDS CMD...: runs CMD with a timeout, keeps its status and output in $WORK/NAME.*
run() {
  local name=$1 limit=$2
  shift 2
  echo "== $name (limit ${limit}s)"
  local start=$SECONDS
  timeout "$limit" "$@" >"$WORK/$name.log" 2>&1
  local rc=$?
  echo "$rc $((SECONDS - start))" >"$WORK/$name.status"
  tail -n 5 "$WORK/$name.log"
  echo "== $name: exit $rc after $((SECONDS - start)) s"
}

if command -v nvcc >/dev/null 2>&1 && ldconfig -p 2>/dev/null | grep -q libcudart; then
  run install 300 env TORCHSORT_CUDA=1 make install
else
  run install 300 make install
fi
run pytest_cuda 120 "$PY" -m pytest -q -m cuda tests
run bench_gpu 330 "$PY" benchmarks/bench_gpu.py --json "$WORK/bench_gpu.json" "${QUICK[@]}"

DATA="$WORK/kitti"
"$PY" tools/make_synthetic_kitti.py --out "$DATA" --frames 8 --size 384x128 --val-fraction 0.5 >/dev/null &&
  "$PY" tools/make_depth_maps.py --data-dir "$DATA" >/dev/null
run ddp 120 "$(dirname "$PY")/torchrun" --nproc_per_node 1 tools/train_val.py \
  --config configs/demo/student.yaml --output-dir "$WORK/runs" "dataset.root_dir=$DATA" \
  trainer.max_epoch=1 trainer.max_iters_per_epoch=3 trainer.eval_frequency=1
INFER=(--json "$WORK/bench_infer.json")
[ ${#QUICK[@]} -gt 0 ] && INFER+=(--config configs/demo/student.yaml --resolution 384x128 --batch-sizes 1 --reps 1 --warmup 1 --skip compile)
run bench_infer 150 "$PY" benchmarks/bench_infer.py "${INFER[@]}"

"$PY" - "$WORK" "$OUT" <<'PYTHON'
"""Gather every step's status, timing and output tail and bench_gpu.py's JSON into one file."""
import json
import sys
from pathlib import Path

work, out = Path(sys.argv[1]), Path(sys.argv[2])
result = {"steps": {}}
for status in sorted(work.glob("*.status")):
    rc, seconds = status.read_text().split()
    log = status.with_suffix(".log").read_text(errors="replace").splitlines()
    result["steps"][status.stem] = {"exit": int(rc), "seconds": int(seconds), "tail": log[-15:]}
for name in ("bench_gpu", "bench_infer"):
    if (work / f"{name}.json").is_file():
        result[name] = json.loads((work / f"{name}.json").read_text())
out.write_text(json.dumps(result, indent=1))
failed = [name for name, step in result["steps"].items() if step["exit"] != 0]
print(f"gpu_check: wrote {out}; failed steps: {', '.join(failed) or 'none'}")
PYTHON
