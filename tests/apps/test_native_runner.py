"""The native runner (native/fastcae_run.cpp): built with CMake against the installed torch, it runs an
AOTInductor package of a tiny student and agrees with the eager model; bad input gets one line on stderr.

The module builds the runner once (cmake, about 20 s on two cores) and exports a tiny student once (about
20 s) with the real exporter. The package contract: one input, float32 images [N, C, H, W] in [0, 1] with a
dynamic batch 1..1024; one output, float32 logits [N, K]; metadata fastcae.image_shape = "C,H,W",
fastcae.num_classes = "K", fastcae.model = name.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

REPO = Path(__file__).resolve().parents[2]
IMAGE_SHAPE = (1, 16, 16)
NUM_CLASSES = 10
MAX_BATCH = 1024
CRASH_SIGNS = ("terminate called", "Traceback", "Exception raised from", "frame #", "Segmentation fault",
               "core dumped")


def _compiler():
    return os.environ.get("CXX") or next((c for c in ("c++", "g++", "clang++") if shutil.which(c)), None)


def export_student(model, path, *, image_shape=IMAGE_SHAPE, num_classes=NUM_CLASSES, name="tiny"):
    """``model`` through the real exporter (``fastcae.apps.export``: an AOTInductor package with a dynamic batch
    and the fastcae metadata), with an identity normalisation. Returns the package's path."""
    from fastcae.apps.export import StudentCard
    from fastcae.apps.export import export_student as export

    channels = image_shape[0]
    card = StudentCard(name, num_classes, tuple(image_shape), (0.0,) * channels, (1.0,) * channels)
    return export(model, card, path).path


def tiny_student():
    """A conv, a pool and a linear head, set by hand so that its top-1 class varies with the images'
    brightness and contrast (a randomly initialised one gives every image the class of its largest bias)."""
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(4, NUM_CLASSES))
    with torch.no_grad():
        kernels = torch.zeros(4, 1, 3, 3)
        kernels[:, 0, 1, 1] = torch.tensor([1.0, -1.0, 1.0, -1.0])  # brightness, darkness,
        kernels[2:, 0, 1, 2] = torch.tensor([-1.0, 1.0])  # and horizontal edges either way
        model[0].weight.copy_(kernels)
        model[0].bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.0]))
        model[4].weight.copy_(torch.randn(NUM_CLASSES, 4, generator=torch.Generator().manual_seed(0)) * 4)
        model[4].bias.zero_()
    return model.eval()


def images(n, seed):
    """Random float32 images in [0, 1], each with its own brightness and contrast."""
    rng = np.random.default_rng(seed)
    noise = rng.random((n, *IMAGE_SHAPE), dtype=np.float32)
    brightness, contrast = rng.random((2, n, 1, 1, 1), dtype=np.float32)
    return np.clip(brightness + (noise - 0.5) * 2 * contrast, 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def runner(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed: the native runner cannot be built")
    if _compiler() is None:
        pytest.skip("no C++ compiler (c++, g++ or clang++; or $CXX) is installed: the native runner cannot be built")
    build = tmp_path_factory.mktemp("native-build")
    for cmd in (["cmake", "-S", str(REPO), "-B", str(build), f"-DPython3_EXECUTABLE={sys.executable}"],
                ["cmake", "--build", str(build), "-j2"]):
        proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
        assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    exe = build / "fastcae-run"
    assert exe.is_file()
    return exe


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    if _compiler() is None:
        pytest.skip("no C++ compiler: AOTInductor cannot compile the package")
    model = tiny_student()
    return model, Path(export_student(model, tmp_path_factory.mktemp("package") / "tiny.pt2"))


def run(runner, *args):
    return subprocess.run([str(runner), *map(str, args)], check=False, capture_output=True, text=True, timeout=300)


def predictions(stdout):
    rows = [line.split() for line in stdout.splitlines() if line and not line.startswith("#")]
    assert all(len(row) == 2 for row in rows), stdout
    assert [int(i) for i, _ in rows] == list(range(len(rows)))
    return [int(c) for _, c in rows]


def eager(model, x):
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


def test_runner_matches_the_eager_model(runner, student, tmp_path):
    model, package = student
    x = images(37, seed=1)
    np.save(tmp_path / "images.npy", x)
    proc = run(runner, package, tmp_path / "images.npy", "--logits", tmp_path / "logits.npy")
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    expected = eager(model, x)
    logits = np.load(tmp_path / "logits.npy")
    assert logits.dtype == np.float32 and logits.shape == (37, NUM_CLASSES)
    np.testing.assert_allclose(logits, expected, atol=1e-4, rtol=0)
    assert predictions(proc.stdout) == expected.argmax(1).tolist()
    assert len(set(expected.argmax(1).tolist())) > 1, "the test images should not all get one class"


def test_runner_reads_uint8_a_single_image_and_more_than_one_batch(runner, student, tmp_path):
    model, package = student
    u8 = (images(5, seed=2) * 255).round().astype(np.uint8)
    np.save(tmp_path / "u8.npy", u8)
    proc = run(runner, package, tmp_path / "u8.npy", "--logits", tmp_path / "u8_logits.npy")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "u8_logits.npy"), eager(model, u8.astype(np.float32) / 255),
                               atol=1e-4, rtol=0)

    one = images(1, seed=3)[0]  # [C, H, W]
    np.save(tmp_path / "one.npy", one)
    proc = run(runner, package, tmp_path / "one.npy", "--logits", tmp_path / "one_logits.npy")
    assert proc.returncode == 0, proc.stderr
    assert predictions(proc.stdout) == eager(model, one[None]).argmax(1).tolist()

    many = images(MAX_BATCH + 77, seed=4)  # more than the exported batch range: run in chunks
    np.save(tmp_path / "many.npy", many)
    proc = run(runner, package, tmp_path / "many.npy", "--logits", tmp_path / "many_logits.npy")
    assert proc.returncode == 0, proc.stderr
    np.testing.assert_allclose(np.load(tmp_path / "many_logits.npy"), eager(model, many), atol=1e-4, rtol=0)


@pytest.mark.parametrize("version", [(1, 0), (2, 0), (3, 0)])
def test_runner_reads_npy_format_versions(runner, student, tmp_path, version):
    model, package = student
    x = images(4, seed=6)
    with open(tmp_path / "images.npy", "wb") as f:
        np.lib.format.write_array(f, x, version=version)
    proc = run(runner, package, tmp_path / "images.npy")
    assert proc.returncode == 0, proc.stderr
    assert predictions(proc.stdout) == eager(model, x).argmax(1).tolist()


def test_runner_bench_times_three_batch_sizes(runner, student, tmp_path):
    _, package = student
    np.save(tmp_path / "images.npy", images(3, seed=5))
    proc = run(runner, package, tmp_path / "images.npy", "--bench")
    assert proc.returncode == 0, proc.stderr
    bench = [line for line in proc.stdout.splitlines() if line.startswith("# batch")]
    assert [int(line.split()[2].rstrip(":")) for line in bench] == [1, 8, 64], proc.stdout
    assert all("ms/batch" in line and "images/s" in line for line in bench)
    assert len(predictions(proc.stdout)) == 3


def _cuda_package(package, path):
    """The package with its metadata claiming it was built for CUDA."""
    with zipfile.ZipFile(package) as src, zipfile.ZipFile(path, "w") as dst:
        for item in src.infolist():
            data = src.read(item.filename)
            if item.filename.endswith("_metadata.json"):
                data = json.dumps({**json.loads(data), "AOTI_DEVICE_KEY": "cuda"}).encode()
            dst.writestr(item, data)
    return path


BAD_INPUTS = {
    # case: (how to make the arguments, words the error must contain)
    "wrong shape": (lambda d, p: [p, _save(d / "rgb.npy", np.zeros((2, 3, 16, 16), np.float32))],
                    ["shape (2, 3, 16, 16)", "[N, 1, 16, 16]"]),
    "wrong dtype": (lambda d, p: [p, _save(d / "f64.npy", np.zeros((2, 1, 16, 16), np.float64))],
                    ["'<f8'", "'<f4'", "'|u1'"]),
    "fortran order": (lambda d, p: [p, _save(d / "f.npy", np.asfortranarray(images(2, 0)))], ["Fortran order"]),
    "missing images": (lambda d, p: [p, d / "missing.npy"], ["not found", "missing.npy"]),
    "not a .npy": (lambda d, p: [p, _write(d / "text.npy", b"hello\n")], ["not a .npy file"]),
    "missing package": (lambda d, p: [d / "missing.pt2", _save(d / "ok.npy", images(2, 0))],
                        ["not found", "missing.pt2"]),
    "not a package": (lambda d, p: [_save(d / "ok.npy", images(2, 0)), d / "ok.npy"], ["not a .pt2 package"]),
    "zip that is not a package": (lambda d, p: [_zip(d / "other.pt2"), _save(d / "ok.npy", images(2, 0))],
                                  ["other.pt2", "not an AOTInductor package"]),
    "cuda package without cuda": (lambda d, p: [_cuda_package(p, d / "cuda.pt2"), _save(d / "ok.npy", images(2, 0))],
                                  ["built for cuda", "no CUDA device"]),
    "--device cuda without cuda": (lambda d, p: [p, _save(d / "ok.npy", images(2, 0)), "--device", "cuda"],
                                   ["--device cuda", "no CUDA device"]),
}


def _save(path, array):
    np.save(path, array)
    return path


def _write(path, data):
    path.write_bytes(data)
    return path


def _zip(path):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("readme.txt", "not a model")
    return path


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_runner_rejects_bad_input_with_one_line(runner, student, tmp_path, case):
    if "cuda" in case and torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device")
    make_args, words = BAD_INPUTS[case]
    proc = run(runner, *make_args(tmp_path, student[1]))
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("fastcae-run: error: ")
    for word in words:
        assert word in lines[0], lines[0]
    assert not any(sign in proc.stderr + proc.stdout for sign in CRASH_SIGNS)
    assert proc.stdout == ""
