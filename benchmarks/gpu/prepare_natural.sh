#!/usr/bin/env bash
# Fill .gpu-carry/ (git-ignored) with what benchmarks/gpu/natural.sh needs on a GPU machine that has no network
# and no ../shared: the CIFAR-10 test set and the public ResNet-56 (from ../shared/data), NAYER's repository as
# a bare clone at its pinned commit (from the fetched mirror), and the wheels NAYER imports that the GPU image
# lacks (Python 3.12, manylinux x86-64). About 36 MB: carry it with the device call (carry: [".gpu-carry"]).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
C=.gpu-carry
grep -qx "/$C/" .git/info/exclude 2>/dev/null || echo "/$C/" >> .git/info/exclude
mkdir -p "$C/data" "$C/wheels"
cp ../shared/data/cifar10_test.npz ../shared/data/cifar10_resnet56.pth "$C/data/"
rm -rf "$C/nayer.git"
git clone -q --bare "${NAYER_MIRROR:-/work/.mirror/tmtuan1307+NAYER/repo}" "$C/nayer.git"
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$C/wheels" kornia==0.9.2 kornia-rs==0.2.0 termcolor==3.3.0 xlsxwriter==3.3.1 pandas==3.1.1
du -sh "$C"
