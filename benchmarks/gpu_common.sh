# What every GPU script here starts with (sourced by gpu_check.sh, gpu_followup.sh and gpu_session.sh): the
# repository root as the working directory, $OUT for what comes back, $PY, `part NAME CAP CMD...` (CMD under a
# time cap, its seconds and exit status appended to $LOG), and $INSTALL.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OUT=${OUT:-gpu-out}
mkdir -p "$OUT"
PY=${PYTHON:-python}
LOG="$OUT/check.jsonl"
part() { local name=$1 cap=$2; shift 2; local t0=$SECONDS; timeout --kill-after=5 "$cap" "$@"; local rc=$?
         echo "{\"part\": \"timing\", \"name\": \"$name\", \"seconds\": $((SECONDS - t0)), \"rc\": $rc}" >> "$LOG"; }

# The repository on the path first, so scripts under benchmarks/ and native/ import this checkout's fastcae.
# The kernels sit at the top (kernels/) and only an install maps them to fastcae.kernels (pyproject's
# package-dir), so the path alone is not enough: $INSTALL installs (editable, no dependencies: the GPU image
# brings its own torch and triton, and has no network) unless fastcae.kernels already imports from outside
# the repository.
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
INSTALL="(cd / && $PY -c 'import fastcae.kernels' 2>/dev/null) || $PY -m pip install -q --no-deps --no-build-isolation -e . >/dev/null"
