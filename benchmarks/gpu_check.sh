#!/usr/bin/env bash
# One-GPU check of the real recipe: LoRA train step at 4 x 1024 bf16 on a random
# Phi-3.5-mini-shaped base (step time, tokens/s, MFU, peak device memory), batch-1 decode
# tokens/s against the HBM roofline, prefill tokens/s at 2048. Writes one JSON file and prints
# its path. What is measured and how: benchmarks/gpu_check.py's docstring.
#
#   benchmarks/gpu_check.sh                  # on a machine with one NVIDIA GPU (<= 8 minutes)
#   benchmarks/gpu_check.sh --tiny           # tiny shapes on any backend: checks the script
#
# Options: --tiny, --no-install (use the current python as is), --out FILE, and anything
# benchmarks/gpu_check.py accepts (--no-remat, --attention cudnn, --hbm-gbps N, ...).
#
# Environment: on a bare machine the script makes .venv-gpu/ beside the repository and installs
# the package with jax[cuda12] into it (skipped when the current python already sees a GPU, or
# with --no-install). PYTHON picks the interpreter (default python3); GPU_CHECK_TIMEOUT bounds
# the measurement in seconds (default 420, so install + measurement fit in 8 minutes).
set -euo pipefail

cd "$(dirname "$0")/.."
start=$(date +%s)
tiny=0
install=1
out=""
pass=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --tiny) tiny=1; pass+=("--tiny"); shift ;;
    --no-install) install=0; shift ;;
    --out) out="$2"; shift 2 ;;
    --out=*) out="${1#--out=}"; shift ;;
    -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
    *) pass+=("$1"); shift ;;
  esac
done
[[ $tiny == 1 ]] && install=0
if [[ -z "$out" ]]; then
  kind=$([[ $tiny == 1 ]] && echo "gpu_check-tiny" || echo "gpu_check")
  out="benchmarks/results/$kind-$(date +%Y%m%d-%H%M%S).json"
fi

py="${PYTHON:-python3}"
sees_gpu() {
  "$1" - <<'EOF' 2>/dev/null
import jax, sys
sys.exit(0 if any(d.platform == "gpu" for d in jax.devices()) else 1)
EOF
}

if [[ $install == 1 ]] && ! sees_gpu "$py"; then
  venv=".venv-gpu"
  if [[ -x "$venv/bin/python" ]] || "$py" -m venv "$venv"; then
    py="$venv/bin/python"
  else
    echo "[gpu_check] no venv module; installing into $py itself" >&2
  fi
  # The jax version this repository is tested with, with CUDA 12 wheels (pip's nvidia-*
  # packages); JAX_VERSION overrides it, and without that exact release pip takes the newest.
  spec="jax[cuda12]==${JAX_VERSION:-0.10.2}"
  echo "[gpu_check] installing the package and $spec" >&2
  "$py" -m pip install --quiet --upgrade pip || true
  if ! "$py" -m pip install --quiet -e . "$spec"; then
    echo "[gpu_check] $spec not installable; trying the newest jax[cuda12]" >&2
    "$py" -m pip install --quiet -e . "jax[cuda12]"
  fi
  if ! sees_gpu "$py"; then
    echo "[gpu_check] jax sees no GPU after installing $spec:" >&2
    "$py" -c "import jax; print(jax.devices())" >&2 || true
    exit 1
  fi
fi
echo "[gpu_check] install/check took $(( $(date +%s) - start )) s; measuring" >&2

mkdir -p "$(dirname "$out")"
status=0
timeout "${GPU_CHECK_TIMEOUT:-420}" "$py" benchmarks/gpu_check.py --out "$out" "${pass[@]}" \
  || status=$?
echo "[gpu_check] total $(( $(date +%s) - start )) s, exit status $status" >&2
if [[ -f "$out" ]]; then
  echo "$out"
else
  echo "[gpu_check] no result written" >&2
  exit 1
fi
exit "$status"
