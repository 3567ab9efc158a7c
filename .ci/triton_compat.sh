#!/usr/bin/env bash
# The fused Triton kernels against the Triton of the GPU image (3.6; the pinned stack has 3.8): every kernel
# compiled ahead of time for sm_90 and sm_80 by `python tools/kernel_check.py`, no GPU needed.
#
#   bash .ci/triton_compat.sh                 # Triton 3.6.0, sm_90 and sm_80
#   TRITON_COMPAT_VERSION=3.5.1 bash .ci/triton_compat.sh
#
# Recipe: a small venv (.venv-triton36, git-ignored by its own .gitignore) holding only that Triton, with
# `pip install --no-deps` (torch 2.14.1 itself requires triton 3.8). A .pth file then appends the main venv's
# site-packages (torch, the editable fastcae) after the venv's own, so `import triton` finds 3.6 and
# `import torch` the main venv's. torch only has to import (the kernel modules register their custom ops);
# nothing runs on it, and torch imports no Triton at import time. The main venv is the one .ci/run builds;
# it is built here the same way if missing. Exit status: non-zero if a check failed (a compile error, a
# register spill, or shared memory over the limit), after running them all.
set -euo pipefail
cd "$(dirname "$0")/.."

version="${TRITON_COMPAT_VERSION:-3.6.0}"
short="$(echo "$version" | cut -d. -f1,2 | tr -d .)"
main_venv="${MAIN_VENV:-.venv}"
venv="${TRITON_COMPAT_VENV:-.venv-triton$short}"
archs="${TRITON_COMPAT_ARCHS:-sm_90 sm_80}"
start=$(date +%s)

if ! "$main_venv/bin/python" -c "import torch, fastcae" 2>/dev/null; then
    echo "== $main_venv has no torch/fastcae: installing the pinned stack as .ci/run does"
    python3 -m venv "$main_venv"
    "$main_venv/bin/pip" install -q -c constraints.txt -e ".[dev]"
fi

if [ ! -x "$venv/bin/python" ]; then
    # the main venv's interpreter: the same Python version, so torch's extension modules load
    "$main_venv/bin/python" -m venv "$venv"
    echo '*' > "$venv/.gitignore"
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "triton==$version"

site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
main_site="$("$main_venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
main_site="$(cd "$main_site" && pwd)"
# addsitedir (not a bare path line) so the main venv's own .pth files run too: the editable fastcae's finder
echo "import site; site.addsitedir('$main_site')" > "$site/zz_fastcae_main_venv.pth"

got="$("$venv/bin/python" -c 'import triton, torch; print(triton.__version__, torch.__version__)')"
echo "== $venv: triton, torch = $got"
case "$got" in
    "$version "*) ;;
    *) echo "expected triton $version in $venv"; exit 1 ;;
esac

status=0
for arch in $archs; do
    echo "== python tools/kernel_check.py --arch $arch (triton $version)"
    # TRITON_INTERPRET must be unset: the interpreter compiles nothing
    env -u TRITON_INTERPRET OMP_NUM_THREADS=1 "$venv/bin/python" tools/kernel_check.py --arch "$arch" || status=1
done
echo "== triton $version compat check: $([ $status = 0 ] && echo passed || echo FAILED) in $(( $(date +%s) - start ))s"
exit $status
