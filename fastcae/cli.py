"""Command line: ``fastcae demo``, ``fastcae distill`` (from checkpoints and model names) and ``fastcae transfer``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from .config import PRESETS, DistillConfig


def load_weights(model: torch.nn.Module, path: str | Path) -> torch.nn.Module:
    """Load a state dict (``.pt``/``.pth`` via ``weights_only=True``, or ``.safetensors``) into ``model``.

    Accepts a bare state dict or one nested under "state_dict", "model" or "student"; never unpickles code.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as err:  # noqa: BLE001
            raise ValueError(f"{path} cannot be read as a weights-only checkpoint ({err}); save the model's "
                             f"state_dict() rather than the whole pickled model") from err
    for key in ("state_dict", "model", "student"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    state = {k.removeprefix("module."): v for k, v in state.items()}  # DataParallel checkpoints
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"the weights in {path} do not fit the {type(model).__name__} architecture: {err}") from err
    return model


def _floats(text: str) -> tuple[float, ...]:
    return tuple(float(v) for v in text.split(","))


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _class_names(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    path = Path(spec)
    if path.exists():
        return [line.strip() for line in path.read_text().splitlines() if line.strip()]
    return [name.strip() for name in spec.split(",")]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastcae", description="Fast data-free knowledge distillation (CAE-DFKD)")
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="distil a digits teacher without data (embedded demo, no download)")
    demo.add_argument("--out", default="fastcae-demo", help="output directory (PNG pictures, summary.json)")
    demo.add_argument("--budget", type=float, default=180.0, help="distillation wall-time budget in seconds")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default=None)
    demo.add_argument("--no-cache", action="store_true", help="retrain the teacher even if one is cached")
    demo.add_argument("--no-progress", action="store_true")

    dist = sub.add_parser("distill", help="distil a student from a teacher checkpoint")
    dist.add_argument("--teacher", required=True, help="teacher weights (.pt/.pth state dict or .safetensors)")
    dist.add_argument("--teacher-model", required=True, help="teacher architecture (fastcae.models.list_models())")
    dist.add_argument("--student-model", required=True, help="student architecture")
    dist.add_argument("--student-init", default=None, help="optional initial student weights")
    dist.add_argument("--num-classes", type=int, default=None)
    dist.add_argument("--class-names", default=None, help="comma-separated names, or a file with one per line")
    dist.add_argument("--image-shape", default="3,32,32", help="C,H,W")
    dist.add_argument("--mean", default="0.4914,0.4822,0.4465")
    dist.add_argument("--std", default="0.2023,0.1994,0.2010")
    dist.add_argument("--preset", default=None, choices=sorted(PRESETS))
    dist.add_argument("--out", default="fastcae-run", help="directory for checkpoints and the student")
    dist.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                      help="any DistillConfig field, e.g. --set paradigm=nayer --set epochs=200 (repeatable)")
    dist.add_argument("--no-progress", action="store_true")

    tr = sub.add_parser("transfer", help="linear probe / fine-tune a student on a downstream set")
    tr.add_argument("--student", required=True, help="student weights (.pt/.pth state dict or .safetensors)")
    tr.add_argument("--student-model", required=True, help="student architecture (fastcae.models.list_models())")
    tr.add_argument("--num-classes", type=int, required=True, help="output width the student was distilled with")
    tr.add_argument("--in-chans", type=int, default=1, help="input channels of the student")
    tr.add_argument("--dataset", default="digits-5-9", help="'digits' or 'digits-A-B' (bundled, no download)")
    tr.add_argument("--image-size", type=int, default=16)
    tr.add_argument("--mean", default=None, help="per-channel mean (default: the model's registered one)")
    tr.add_argument("--std", default=None)
    tr.add_argument("--probe", action="store_true", help="run the linear probe (default: both methods)")
    tr.add_argument("--finetune", action="store_true", help="run fine-tuning (default: both methods)")
    tr.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    tr.add_argument("--probe-epochs", type=int, default=100, help="L-BFGS iterations of the linear probe")
    tr.add_argument("--lr", type=float, default=0.01, help="fine-tuning peak learning rate")
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default=None)
    tr.add_argument("--json", default=None, help="also write the results to this JSON file")
    return parser


def _cmd_demo(args) -> int:
    from .demo import format_table, run_demo

    summary = run_demo(args.out, budget_seconds=args.budget, seed=args.seed, device=args.device,
                       progress=not args.no_progress, use_cache=not args.no_cache)
    print(format_table(summary))
    print(f"\npictures: {Path(args.out) / 'synthesised.png'}, {Path(args.out) / 'accuracy.png'}; "
          f"record: {Path(args.out) / 'summary.json'}")
    return 0


def _cmd_distill(args) -> int:
    from .api import distill
    from .models import create_model

    names = {f.name for f in dataclasses.fields(DistillConfig)}
    options = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY a DistillConfig field")
        options[key] = _parse_value(value)
    shape = tuple(int(v) for v in args.image_shape.split(","))
    class_names = _class_names(args.class_names)
    num_classes = args.num_classes or (len(class_names) if class_names else None)
    if num_classes is None:
        raise SystemExit("give --num-classes or --class-names")
    teacher = load_weights(create_model(args.teacher_model, num_classes=num_classes, in_chans=shape[0]), args.teacher)
    student = create_model(args.student_model, num_classes=num_classes, in_chans=shape[0])
    if args.student_init:
        load_weights(student, args.student_init)
    out = Path(args.out)
    result = distill(teacher, student, class_names, num_classes=num_classes, image_shape=shape,
                     mean=_floats(args.mean), std=_floats(args.std), preset=args.preset,
                     checkpoint_dir=out / "checkpoints", progress=not args.no_progress, **options)
    out.mkdir(parents=True, exist_ok=True)
    torch.save(result.student.state_dict(), out / "student.pt")
    (out / "history.json").write_text(json.dumps(result.history, indent=1))
    (out / "config.json").write_text(json.dumps(result.config.to_dict(), indent=1))
    print(f"student saved to {out / 'student.pt'} after {len(result.history)} epochs")
    return 0


def _cmd_transfer(args) -> int:
    from .models import create_model, model_default_cfg
    from .transfer import format_results, load_transfer_dataset, run_transfer

    student = load_weights(create_model(args.student_model, num_classes=args.num_classes, in_chans=args.in_chans),
                           args.student)
    cfg = model_default_cfg(args.student_model)
    mean = _floats(args.mean) if args.mean else tuple(cfg.get("mean", ()))
    std = _floats(args.std) if args.std else tuple(cfg.get("std", ()))
    if len(mean) != args.in_chans:
        mean = (0.5,) * args.in_chans
    if len(std) != args.in_chans:
        std = (0.5,) * args.in_chans
    train, test = load_transfer_dataset(args.dataset, image_size=args.image_size, in_chans=args.in_chans)
    both = not (args.probe or args.finetune)
    results = run_transfer(student, train, test, mean, std, probe=args.probe or both,
                           finetune=args.finetune or both, probe_epochs=args.probe_epochs, epochs=args.epochs,
                           lr=args.lr, batch_size=args.batch_size, device=args.device, seed=args.seed)
    results.update(student_model=args.student_model, dataset=args.dataset, image_size=args.image_size,
                   mean=list(mean), std=list(std))
    print(f"{args.student_model} on {args.dataset} ({len(train)} train / {len(test)} test images)")
    print(format_results(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"demo": _cmd_demo, "distill": _cmd_distill, "transfer": _cmd_transfer}[args.command](args)
    except (ValueError, FileNotFoundError) as err:
        print(f"fastcae: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
