"""What compression bought: teacher against student at inference, eager, compiled and exported.

Per pair, per network (teacher, student), per form and per batch size (1 and 64), one timed call is one
forward of a batch of images in [0, 1] through the network with its normalisation folded in
(``fastcae.apps.export.NormalizedStudent``, what the package computes), with a device sync at the end:

- ``eager``: the network in eval mode under ``torch.no_grad``;
- ``compiled``: ``torch.compile`` (inductor) of the same, dynamic=False;
- ``exported``: the AOTInductor package ``fastcae.apps.export`` writes (``.pt2``), loaded with
  ``torch._inductor.aoti_load_package``: what the native runner runs.

On a GPU the package is checked by the native runner where one is built (``$FASTCAE_RUNNER``, else
``build/fastcae-run``), and Python's loader is first tried in a child process: with torch 2.11 it segfaults
on every CUDA package, which would end the whole benchmark run. Where the export or that load fails, the
``exported`` cases skip with the reason (``fastcae-run PACKAGE.pt2 IMAGES.npy --bench`` times the package
there), and the other forms run as usual.

Pairs: the demo's (``digits_teacher`` -> ``digits_student``, 1x16x16) and a CIFAR one (``resnet34`` ->
``resnet18``, 3x32x32; random weights, which time the same as trained ones). ``extra_info`` holds images per
second at the median, parameter count, the size of the saved state dict and of the ``.pt2``.

Run: ``pytest benchmarks/test_bench_deploy.py --benchmark-only`` (on 2 CPU cores: about 5 minutes, most of it
compiling). ``python benchmarks/summarize.py`` turns a saved run into the table of docs/deployment.md.
"""

import io
import os
from pathlib import Path

import pytest
import torch

from benchmarks.scales import DEVICE, sync
from fastcae.apps.export import CHECK_BATCH, ExportError, NormalizedStudent, StudentCard, _load_in_child, export_student
from fastcae.models import create_model

PAIRS = {
    "digits": (("digits_teacher", "digits_student"), (1, 16, 16), 10),
    "cifar10": (("resnet34", "resnet18"), (3, 32, 32), 10),
}
FORMS = ["eager", "compiled", "exported"]
BATCHES = [1, 64]
ROUNDS = 20 if DEVICE == "cuda" else 5
_CACHE: dict = {}


def _network(pair: str, role: str, tmp_dir):
    """(eval model, forward for a form, params, state-dict bytes, .pt2 bytes), built once per network."""
    key = (pair, role)
    if key not in _CACHE:
        (teacher, student), shape, classes = PAIRS[pair]
        name = teacher if role == "teacher" else student
        torch.manual_seed(0)
        model = create_model(name, num_classes=classes, in_chans=shape[0]).to(DEVICE).eval()
        mean, std = (0.5,) * shape[0], (0.25,) * shape[0]
        buffer = io.BytesIO()
        torch.save(model.state_dict(), buffer)
        path, unusable, runner = tmp_dir / f"{pair}-{role}.pt2", None, _runner()
        try:
            export_student(model, StudentCard(name, classes, shape, mean, std), path, device=DEVICE, runner=runner)
        except ExportError as err:
            unusable = f"the export failed: {str(err).split('. ')[0]}"
        # Python's CUDA loader can crash its process (torch 2.11): where the runner checked the package, try the
        # loader in a child before this process uses it (without a runner the export's check already did)
        if unusable is None and runner is not None:
            try:
                _load_in_child(str(path), torch.rand(CHECK_BATCH, *shape, device=DEVICE), timeout=300)
            except ExportError as err:
                how = str(err).split("but ", 1)[-1].split(", so")[0]  # "loading it in Python (torch ...) died of ..."
                unusable = f"the package was written, but {how}"
        _CACHE[key] = dict(model=model, name=name, shape=shape, mean=mean, std=std, path=path, unusable=unusable,
                           params=sum(p.numel() for p in model.parameters()), state_bytes=buffer.getbuffer().nbytes,
                           pt2_bytes=path.stat().st_size if path.exists() else None)
    return _CACHE[key]


def _runner() -> Path | None:
    """The native runner that checks a GPU package, where one is built; on a CPU Python's loader checks it."""
    if DEVICE != "cuda":
        return None
    built = Path(os.environ.get("FASTCAE_RUNNER") or Path(__file__).parents[1] / "build" / "fastcae-run")
    return built if built.is_file() else None


def _forward(net: dict, form: str):
    if form == "exported":
        if net["unusable"]:
            pytest.skip(f"the {net['name']} package cannot be timed from Python here: {net['unusable']}; "
                        f"`fastcae-run PACKAGE.pt2 IMAGES.npy --bench` times it")
        from torch._inductor import aoti_load_package

        return aoti_load_package(str(net["path"]))
    model = NormalizedStudent(net["model"], net["mean"], net["std"]).to(DEVICE).eval()  # as the package computes
    return torch.compile(model, dynamic=False) if form == "compiled" else model


@pytest.fixture(scope="module")
def tmp_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("deploy")


@pytest.mark.parametrize("batch", BATCHES)
@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("role", ["teacher", "student"])
@pytest.mark.parametrize("pair", list(PAIRS))
def test_inference(benchmark, pair, role, form, batch, tmp_dir):
    net = _network(pair, role, tmp_dir)
    forward = _forward(net, form)
    x = torch.rand(batch, *net["shape"], device=DEVICE)

    def run():
        with torch.no_grad():
            forward(x)
        sync()

    benchmark.group = f"inference {pair} batch {batch}"
    benchmark.pedantic(run, rounds=ROUNDS, warmup_rounds=2, iterations=1)
    benchmark.extra_info.update(pair=pair, role=role, model=net["name"], form=form, batch=batch, params=net["params"],
                                state_dict_bytes=net["state_bytes"], pt2_bytes=net["pt2_bytes"])
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = batch / benchmark.stats.stats.median
