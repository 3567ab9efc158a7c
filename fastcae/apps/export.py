"""Ship the student: raw images in [0, 1] in, logits out, outside Python.

A run leaves its student where the next command can take it (``write_student``: ``student.pt`` and a small
``student.json`` card with the model name, classes, image shape and mean/std), so ``fastcae export --run DIR``
needs nothing else. ``export_student`` folds the input normalisation into the network, exports it with
``torch.export`` (dynamic batch size) and writes

- ``.pt2``: an AOTInductor package, compiled ahead of time for the device it is exported on; the native
  runner (``native/``, built by the top-level ``CMakeLists.txt``) and ``torch._inductor.aoti_load_package``
  load it. Its metadata carries the card (``fastcae.image_shape``, ``fastcae.num_classes``, ``fastcae.model``);
- ``.onnx``: ONNX, where the ``onnx`` package (and ``onnxruntime``, to check it) is installed.

Every export checks itself before it writes: the exported program and the eager student run on the same fresh
random batch (of another size than the one traced, so the dynamic batch is exercised too), and a file whose
logits differ beyond tolerance is never written. Files are written atomically.

Who runs the package for that check: the native runner when one is given (``runner=``, ``--runner``: what
deploys it, so the best judge); else Python's ``aoti_load_package``, in this process for a CPU package and in
a child process for a CUDA one. On torch 2.11 with CUDA 13 (an H200, 2026-12-04) that loader segfaulted on
every CUDA package, while the native runner loaded and ran the same file; in a child, such a crash becomes an
ExportError that says so and names the runner, instead of ending the user's process.
"""

from __future__ import annotations

import copy
import inspect
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from ..atomic import atomic_write
from ..models import create_model, list_models
from ..models.weights import load_weights
from ..utils import channel_tensor, normalize

STUDENT_WEIGHTS = "student.pt"
STUDENT_CARD = "student.json"
MAX_BATCH = 1024  # the exported program's batch range is 1..MAX_BATCH
CHECK_BATCH = 5  # images in the self-check (not the traced batch of 2)
LOAD_TIMEOUT = 600.0  # seconds for a check outside this process (a first load may compile CPU probes: ~1 min)


class ExportError(ValueError):
    """An export that could not be made or did not check out; nothing was written."""


@dataclass
class StudentCard:
    """What a deployed student needs besides its weights: which network, and what input it expects."""

    model: str  # fastcae.models name
    num_classes: int
    image_shape: tuple[int, int, int]  # (channels, height, width)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: list[str] | None = None

    @classmethod
    def read(cls, path: str | Path) -> "StudentCard":
        data = json.loads(Path(path).read_text())
        missing = {"model", "num_classes", "image_shape", "mean", "std"} - set(data)
        if missing:
            raise ExportError(f"{path}: the student card lacks {', '.join(sorted(missing))}")
        return cls(str(data["model"]), int(data["num_classes"]), tuple(int(v) for v in data["image_shape"]),
                   tuple(float(v) for v in data["mean"]), tuple(float(v) for v in data["std"]),
                   data.get("class_names"))


def write_student(out_dir: str | Path, student: nn.Module, card: StudentCard) -> Path:
    """``out_dir/student.pt`` (the state dict) and ``out_dir/student.json`` (the card), each written atomically."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in student.state_dict().items()}
    atomic_write(out / STUDENT_WEIGHTS, lambda tmp: torch.save(state, tmp))
    text = json.dumps(asdict(card), indent=1)
    atomic_write(out / STUDENT_CARD, lambda tmp: Path(tmp).write_text(text))
    return out / STUDENT_WEIGHTS


def read_student(run_dir: str | Path | None = None, *, weights: str | Path | None = None,
                 card: StudentCard | None = None) -> tuple[nn.Module, StudentCard]:
    """The student of a run directory (its ``student.pt`` and ``student.json``), or of ``weights`` with a
    ``card`` given; errors name what does not match (an unknown model name, weights of another network)."""
    if run_dir is not None:
        run = Path(run_dir)
        if not (run / STUDENT_CARD).is_file():
            raise ExportError(f"{run} holds no {STUDENT_CARD}: give a directory written by `fastcae demo` or "
                              f"`fastcae distill`, or --student with --student-model, --num-classes, --image-shape, "
                              f"--mean and --std")
        card = card or StudentCard.read(run / STUDENT_CARD)
        weights = weights or run / STUDENT_WEIGHTS
    if card is None or weights is None:
        raise ExportError("give a run directory, or the student's weights and what it is (model, classes, shape, "
                          "mean/std)")
    if card.model not in list_models():
        raise ExportError(f"unknown student model {card.model!r}; known: {', '.join(list_models())}")
    if len(card.mean) != card.image_shape[0] or len(card.std) != card.image_shape[0]:
        raise ExportError(f"mean/std have {len(card.mean)}/{len(card.std)} values for {card.image_shape[0]} "
                          f"channels")
    model = create_model(card.model, num_classes=card.num_classes, in_chans=card.image_shape[0])
    try:
        load_weights(model, weights)
    except (RuntimeError, KeyError, ValueError, FileNotFoundError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"{weights} does not hold the weights of a {card.model} with {card.num_classes} classes "
                          f"and {card.image_shape[0]} input channels: {first}") from err
    return model.eval(), card


class NormalizedStudent(nn.Module):
    """The student with its input normalisation folded in: images in [0, 1] -> logits."""

    def __init__(self, student: nn.Module, mean, std):
        super().__init__()
        self.student = student
        self.register_buffer("mean", channel_tensor(mean))
        self.register_buffer("std", channel_tensor(std))

    def forward(self, x: Tensor) -> Tensor:
        return self.student(normalize(x, self.mean, self.std))


@dataclass
class ExportReport:
    path: str
    format: str
    device: str
    seconds: float  # export + compile + check
    max_abs_diff: float  # exported vs eager logits on the check batch
    bytes: int


def export_student(student: nn.Module, card: StudentCard, out: str | Path, *, device: str = "cpu",
                   atol: float = 1e-4, rtol: float = 1e-4, runner: str | Path | None = None) -> ExportReport:
    """Export ``student`` (raw [0, 1] images in, logits out, dynamic batch) to ``out``: ``.pt2`` (AOTInductor)
    or ``.onnx``, by the suffix. Checked against the eager student before anything is written; ``runner``
    (a built ``fastcae-run``) checks a ``.pt2`` with the native runner instead of Python's loader."""
    out = Path(out)
    fmt = out.suffix.lower().lstrip(".")
    if fmt not in ("pt2", "onnx"):
        raise ExportError(f"{out}: the file name must end in .pt2 (AOTInductor package, for the native runner) or "
                          f".onnx")
    if runner is not None:
        if fmt != "pt2":
            raise ExportError(f"runner= checks .pt2 packages (the native runner loads those), not .{fmt}")
        runner = Path(runner)
        if not (runner.is_file() and os.access(runner, os.X_OK)):
            raise ExportError(f"runner {runner} is not an executable file: build it with `cmake -S . -B build && "
                              f"cmake --build build` (it is build/fastcae-run)")
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExportError(f"device {device} was asked for but CUDA is not available here; export on cpu")
    start = time.perf_counter()
    model = NormalizedStudent(copy.deepcopy(student), card.mean, card.std).to(device).eval()  # the user's stays put
    example = torch.rand(2, *card.image_shape, device=device)
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    with torch.no_grad():
        try:
            program = torch.export.export(model, (example,), dynamic_shapes=({0: batch},))
        except Exception as err:  # re-raised: the exporter's errors are long, so one line and the type
            raise ExportError(f"torch.export could not trace the student: {type(err).__name__}: "
                              f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}") from err
        check = torch.rand(CHECK_BATCH, *card.image_shape, device=device)
        want = model(check).float().cpu()
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".{fmt}", dir=out.parent)
    os.close(fd)
    try:
        if fmt == "pt2":
            got = _write_pt2(program, card, tmp, check, runner)
        else:
            got = _write_onnx(model, example, tmp, check)
        diff = float((got - want).abs().max())
        if not torch.allclose(got, want, atol=atol, rtol=rtol):
            raise ExportError(f"the exported {fmt} differs from the eager student by up to {diff:.3g} (tolerance "
                              f"{atol:g} + {rtol:g} * |logit|); nothing was written")
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return ExportReport(str(out), fmt, str(device), time.perf_counter() - start, diff, out.stat().st_size)


def _metadata(card: StudentCard) -> dict[str, str]:
    return {"fastcae.image_shape": ",".join(str(v) for v in card.image_shape),
            "fastcae.num_classes": str(card.num_classes), "fastcae.model": card.model}


def compile_pt2(program, card: StudentCard, path: str) -> None:
    """The AOTInductor package of ``program`` at ``path``, with the card in its metadata (not checked)."""
    from torch._inductor import aoti_compile_and_package

    configs = {"aot_inductor.metadata": _metadata(card)}
    if "args" in inspect.signature(aoti_compile_and_package).parameters:  # torch 2.5 wants the example inputs
        aoti_compile_and_package(program, program.example_inputs[0], package_path=path, inductor_configs=configs)
    else:
        aoti_compile_and_package(program, package_path=path, inductor_configs=configs)


def _write_pt2(program, card: StudentCard, path: str, check: Tensor, runner: Path | None = None) -> Tensor:
    """Compile the package to ``path``; its logits on ``check`` (CPU float32), as the checker computes them."""
    compile_pt2(program, card, path)
    if runner is not None:
        return _run_native(runner, path, check)
    if check.is_cuda:
        return _load_in_child(path, check)
    return _load_here(path, check)


def _load_here(path: str, check: Tensor) -> Tensor:
    from torch._inductor import aoti_load_package

    loaded = aoti_load_package(path)
    with torch.no_grad():
        return loaded(check).float().cpu()


# the child process of _load_in_child: loads the package, runs it, saves the logits
_CHILD_CODE = ("import sys, torch\n"
               "from fastcae.apps.export import _load_here\n"
               "package, inputs, out, device = sys.argv[1:]\n"
               "torch.save(_load_here(package, torch.load(inputs).to(device)), out)\n")


def _load_in_child(path: str, check: Tensor, timeout: float = LOAD_TIMEOUT) -> Tensor:
    """``_load_here`` in a child process: a loader that crashes or hangs ends the child, not the export."""
    root = str(Path(__file__).resolve().parents[2])  # this fastcae, installed or not
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
    with tempfile.TemporaryDirectory(prefix="fastcae-check-") as tmp:
        inputs, out = os.path.join(tmp, "inputs.pt"), os.path.join(tmp, "logits.pt")
        torch.save(check.cpu(), inputs)
        try:
            proc = subprocess.run([sys.executable, "-c", _CHILD_CODE, path, inputs, out, str(check.device)],
                                  capture_output=True, text=True, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            raise ExportError(_unchecked(f"loading it in Python did not finish within {timeout:.0f} s")) from None
        if proc.returncode != 0:
            if proc.returncode < 0:
                try:
                    how = f"died of {signal.Signals(-proc.returncode).name}"
                except ValueError:
                    how = f"died of signal {-proc.returncode}"
            else:
                how = f"failed: {_last_line(proc)}"
            raise ExportError(_unchecked(f"loading it in Python (torch {torch.__version__}) {how}"))
        return torch.load(out)


def _last_line(proc: subprocess.CompletedProcess) -> str:
    """What a failed child said last on stderr (the error line), or its exit status."""
    lines = [line.strip() for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else f"exit status {proc.returncode}"


def _unchecked(what: str) -> str:
    return (f"the package compiled, but {what}, so it could not be checked against the eager student and nothing "
            f"was written. The native runner can check it instead: build it (cmake -S . -B build && cmake --build "
            f"build) and pass --runner build/fastcae-run (runner= in Python)")


def _run_native(runner: Path, path: str, check: Tensor, timeout: float = LOAD_TIMEOUT) -> Tensor:
    """The package's logits on ``check`` as the native runner computes them (what a deployment runs)."""
    import numpy as np

    with tempfile.TemporaryDirectory(prefix="fastcae-check-") as tmp:
        images, logits = os.path.join(tmp, "images.npy"), os.path.join(tmp, "logits.npy")
        np.save(images, check.float().cpu().numpy())
        try:
            proc = subprocess.run([str(runner), path, images, "--logits", logits, "--device", check.device.type],
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise ExportError(f"the native runner {runner} did not finish checking the package within "
                              f"{timeout:.0f} s; nothing was written") from None
        if proc.returncode != 0:
            raise ExportError(f"the native runner {runner} could not run the package ({_last_line(proc)}); nothing "
                              f"was written")
        return torch.from_numpy(np.load(logits)).float()


def _write_onnx(model: nn.Module, example: Tensor, path: str, check: Tensor) -> Tensor:
    try:
        import onnxruntime
    except ImportError as err:
        raise ExportError("ONNX export needs the onnx and onnxruntime packages (onnxruntime runs the check "
                          "against the eager student): pip install onnx onnxscript onnxruntime") from err
    model, example, check = model.cpu(), example.cpu(), check.cpu()
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    torch.onnx.export(model, (example,), path, dynamo=True, dynamic_shapes=({0: batch},), input_names=["images"],
                      output_names=["logits"], external_data=False, verbose=False)
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return torch.from_numpy(session.run(["logits"], {"images": check.numpy()})[0]).float()
