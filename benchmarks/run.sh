#!/usr/bin/env bash
# Run the benchmark suite, store the result under benchmarks/results/ with the device and date in its name,
# and print the summary tables (ratios from this one run). Extra arguments go to pytest (e.g. -k steps).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
device=$($PY -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" |
         tr ' /' '__')
out="benchmarks/results/${device}-$(date +%Y-%m-%d).json"
$PY -m pytest benchmarks/ --benchmark-only --benchmark-json "$out" -p no:logging "$@"
$PY benchmarks/summarize.py "$out" | tee "${out%.json}.md"
echo "results: $out (summary: ${out%.json}.md)"
