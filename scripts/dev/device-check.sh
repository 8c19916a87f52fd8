#!/usr/bin/env bash
# One prepared check on a machine with a GPU (run from the repo root): what it is, the test
# suites that train (bf16 forced, so the bf16 path runs on this CPU too), then the quickstart at
# the default policy on CUDA and on this machine's CPU, and the whole-command loop benchmark on
# the CPU. Every step has a time limit and writes under $OUT (default /tmp/device-check), so a
# step that runs out of time still leaves the others' figures.
# Packages the machine lacks may sit in .whl/ (wheels); they are installed to /tmp/site first.
set -uo pipefail
OUT=${OUT:-/tmp/device-check}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 SEQSEARCH_QUIET=1
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
else
  export PYTHONPATH=$PWD
fi
say() { echo "== $*" | tee -a "$OUT/summary.txt"; }
timed() {  # timed LABEL LIMIT CMD...: wall time and exit code of CMD into summary.txt
  local label=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$label.log" 2>&1
  local rc=$?
  say "$label: exit $rc after $((SECONDS - start)) s"
  tail -n 4 "$OUT/$label.log" | tee -a "$OUT/summary.txt"
}

say "machine"
{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
  python3 - <<'PY'
import os, torch
from seqsearch.environment import cpu_name
from seqsearch.precision import native_bf16, resolve_policy
cpu, cuda = torch.device("cpu"), torch.device("cuda")
print(f"torch {torch.__version__}; CPU {cpu_name()}, {os.cpu_count()} cores, kernels "
      f"{torch.backends.cpu.get_cpu_capability()}, native bf16 {native_bf16(cpu)}; auto on CPU: "
      f"{resolve_policy('auto', 'auto', cpu).describe()}; on CUDA: "
      f"{resolve_policy('auto', 'auto', cuda).describe()}")
PY
} 2>&1 | tee -a "$OUT/summary.txt"

timed tests 110 env SEQSEARCH_TEST_PRECISION=bf16 python3 -m pytest -p no:cacheprovider -q \
  -n 8 tests/test_precision.py tests/test_bf16_kernels.py tests/test_train.py tests/test_orders.py \
  tests/test_torchvision_matrix.py
timed quickstart-cuda 160 python3 -m seqsearch run --out /tmp/qs-cuda
python3 - <<'PY'
import yaml
from seqsearch.config import quickstart_path
raw = yaml.safe_load(quickstart_path().read_text())
raw["device"] = "cpu"
open("/tmp/quickstart-cpu.yaml", "w").write(yaml.safe_dump(raw))
PY
timed quickstart-cpu 160 python3 -m seqsearch run /tmp/quickstart-cpu.yaml --out /tmp/qs-cpu
for d in qs-cuda qs-cpu; do
  cp "/tmp/$d/timings.json" "$OUT/$d-timings.json" 2>/dev/null
  cp "/tmp/$d/environment.json" "$OUT/$d-environment.json" 2>/dev/null
done
timed bench-command 90 env CUDA_VISIBLE_DEVICES= python3 -m seqsearch bench command \
  --rounds 3 --threads 8
