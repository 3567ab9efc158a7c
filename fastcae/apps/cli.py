"""Command line: ``fastcae demo``, ``fastcae distill`` (from checkpoints and model names, or a pair preset),
``fastcae presets``, ``fastcae train-teacher`` and ``fastcae transfer``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

import torch

from .. import distributed
from ..config import DistillConfig
from ..datasets import DATASETS
from ..models.weights import load_weights
from ..presets import format_presets_table, get_preset, list_presets
from .teacher import TeacherCheckpointError


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


def _add_distill_args(p: argparse.ArgumentParser) -> None:
    """The flags of ``fastcae distill`` (shared with ``fastcae profile``)."""
    p.add_argument("--teacher", default=None, help="teacher weights (.pt/.pth state dict or .safetensors)")
    p.add_argument("--teacher-model", default=None,
                   help="teacher architecture: a zoo name (fastcae.models.list_models()), torchvision:NAME, "
                        "timm:NAME or hub:OWNER/REPO:ENTRY (local hub cache only; docs/models.md); default: the "
                        "pair preset's")
    p.add_argument("--student-model", default=None,
                   help="student architecture, a spec as for --teacher-model; default: the pair preset's")
    p.add_argument("--student-init", default=None, help="optional initial student weights")
    p.add_argument("--num-classes", type=int, default=None,
                   help="default: from --class-names, the pair preset, else the teacher's config")
    p.add_argument("--class-names", default=None, help="comma-separated names, or a file with one per line "
                                                       "(default: the pair preset's, else the teacher's dataset's)")
    p.add_argument("--image-shape", default=None,
                   help="C,H,W (default: the pair preset's, else the teacher's config's, else 3,32,32)")
    p.add_argument("--mean", default=None,
                   help="per-channel mean (default: the pair preset's, else the teacher's config's, else CIFAR-10's)")
    p.add_argument("--std", default=None,
                   help="per-channel std (default: the pair preset's, else the teacher's config's, else CIFAR-10's)")
    p.add_argument("--preset", default=None, choices=list_presets(),
                   help="a config-only preset or a teacher-student pair (see fastcae presets)")
    p.add_argument("--list-presets", action="store_true", help="print the presets and their accuracies, then exit")
    p.add_argument("--out", default="fastcae-run", help="directory for checkpoints and the student")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="any DistillConfig field, e.g. --set paradigm=nayer --set epochs=200 (repeatable)")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastcae", description="Fast data-free knowledge distillation (CAE-DFKD)")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_demo_parser(sub)
    _add_distill_parsers(sub)
    sub.add_parser("presets", help="list the presets: teacher-student pairs with published accuracies, and the "
                                   "config-only schedules")
    _add_teacher_parser(sub)
    _add_transfer_parser(sub)
    _add_export_parser(sub)
    return parser


def _add_demo_parser(sub) -> None:
    demo = sub.add_parser("demo", help="distil a digits teacher without data (embedded demo, no download)")
    demo.add_argument("--out", default="fastcae-demo", help="output directory (PNG pictures, summary.json)")
    demo.add_argument("--budget", type=float, default=180.0, help="distillation wall-time budget in seconds")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--device", default=None)
    demo.add_argument("--no-cache", action="store_true", help="retrain the teacher even if one is cached")
    demo.add_argument("--no-progress", action="store_true")
    demo.add_argument("--profile", default=None, metavar="REPORT.json",
                      help="write a throughput report (JSON + Markdown + PNG; GPU metrics via NVML when present)")


def _add_distill_parsers(sub) -> None:
    """``fastcae distill`` and ``fastcae profile``, which share its flags."""
    dist = sub.add_parser("distill", help="distil a student from a teacher checkpoint",
                          description="Distil a student from a teacher checkpoint. A pair --preset (fastcae "
                                      "presets) fills in the models, classes, image shape and mean/std; explicit "
                                      "flags override it.")
    _add_distill_args(dist)
    dist.add_argument("--budget", type=float, default=None, metavar="SECONDS",
                      help="wall-time budget: without a preset or schedule flags, a schedule is planned to finish "
                           "within it on this device (same as --set max_seconds=SECONDS)")
    dist.add_argument("--profile", default=None, metavar="REPORT.json",
                      help="write a throughput report (JSON + Markdown + PNG; GPU metrics via NVML when present)")

    prof = sub.add_parser("profile", help="a distillation with a throughput report (the digits demo if no teacher)",
                          description="Run a distillation with the NVML throughput report on and print its "
                                      "summary: images/s per phase, GPU utilisation, memory, power, energy per "
                                      "1,000 images. With --teacher (or a pair --preset) it profiles that run, "
                                      "like `fastcae distill`; without, the embedded digits demo.")
    _add_distill_args(prof)
    prof.add_argument("--report", default=None, metavar="REPORT.json",
                      help="where the report goes (default: OUT/profile.json)")
    prof.add_argument("--budget", type=float, default=60.0, help="demo only: wall-time budget in seconds")


def _add_teacher_parser(sub) -> None:
    tt = sub.add_parser("train-teacher", help="train a teacher on a torchvision dataset (resumable)",
                        description="Train a teacher with the CIFAR recipe: SGD (momentum 0.9, weight decay 5e-4), "
                                    "cosine decay, random crop (padding 4) and horizontal flip. A checkpoint is "
                                    "written atomically after every epoch; running the same command again "
                                    "resumes. At the end, OUT/teacher.pt (state dict) and OUT/teacher.json.")
    tt.add_argument("--dataset", required=True, help="cifar10, cifar100, mnist, fashion-mnist or svhn")
    tt.add_argument("--model", required=True, help="architecture (fastcae.models.list_models())")
    tt.add_argument("--data-root", required=True, help="directory holding the torchvision dataset files")
    tt.add_argument("--out", required=True, help="directory for the checkpoint, teacher.pt and teacher.json")
    tt.add_argument("--epochs", type=int, default=200)
    tt.add_argument("--lr", type=float, default=0.1)
    tt.add_argument("--batch-size", type=int, default=128)
    tt.add_argument("--weight-decay", type=float, default=5e-4)
    tt.add_argument("--momentum", type=float, default=0.9)
    tt.add_argument("--no-flip", action="store_true", help="no horizontal flip (digits, text)")
    tt.add_argument("--eval-every", type=int, default=10, help="epochs between test-split evaluations")
    tt.add_argument("--stop-after", type=int, default=None,
                    help="stop after this many epochs in this call (resume later with the same command)")
    tt.add_argument("--download", action="store_true", help="let torchvision download the dataset if missing")
    tt.add_argument("--seed", type=int, default=0)
    tt.add_argument("--device", default=None)
    tt.add_argument("--no-progress", action="store_true")


def _add_transfer_parser(sub) -> None:
    tr = sub.add_parser("transfer", help="linear probe / fine-tune a student on a downstream set")
    tr.add_argument("--student", required=True, help="student weights (.pt/.pth state dict or .safetensors)")
    tr.add_argument("--student-model", required=True, help="student architecture (fastcae.models.list_models())")
    tr.add_argument("--num-classes", type=int, required=True, help="output width the student was distilled with")
    tr.add_argument("--in-chans", type=int, default=None,
                    help="input channels of the student (default: the model's registered input, else 1)")
    tr.add_argument("--dataset", default="digits-5-9",
                    help="'digits' or 'digits-A-B' (bundled, no download), an .npz of images and labels, or an "
                         "ImageFolder directory (one sub-folder per class; or train/ and test/ of that layout). A "
                         "set given as one pool is split 50/50 per class with --split-seed")
    tr.add_argument("--image-size", type=int, default=None,
                    help="the student's input size (default: the model's registered one; 16 for the digits)")
    tr.add_argument("--resize", action="store_true", help="resize the set's images to --image-size instead of "
                                                         "refusing images of another size")
    tr.add_argument("--split-seed", type=int, default=0, help="seed of the 50/50 split of a one-pool set")
    tr.add_argument("--mean", default=None, help="per-channel mean (default: the model's registered one)")
    tr.add_argument("--std", default=None)
    tr.add_argument("--probe", action="store_true", help="run the linear probe (default: both methods)")
    tr.add_argument("--finetune", action="store_true", help="run fine-tuning (default: both methods)")
    tr.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs")
    tr.add_argument("--probe-epochs", type=int, default=100, help="L-BFGS iterations of the linear probe")
    tr.add_argument("--lr", type=float, default=0.01, help="fine-tuning peak learning rate")
    tr.add_argument("--batch-size", type=int, default=64)
    tr.add_argument("--flip", action="store_true", help="mirror-flip augmentation while fine-tuning (natural "
                                                        "images; not digits or text)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--device", default=None)
    tr.add_argument("--json", default=None, help="also write the results to this JSON file")


def _add_export_parser(sub) -> None:
    ex = sub.add_parser("export", help="export a distilled student (images in [0, 1] -> logits) to .pt2 or .onnx",
                        description="Export a student with its input normalisation folded in, dynamic batch size: "
                                    ".pt2 (an AOTInductor package for the native runner, built for --device) or "
                                    ".onnx (needs onnx and onnxruntime). The export is checked against the eager "
                                    "student before it is written.")
    ex.add_argument("--run", default=None, help="a directory written by `fastcae demo` or `fastcae distill` "
                                                "(student.pt and student.json): nothing else is needed")
    ex.add_argument("--student", default=None, help="the student's weights, instead of --run")
    ex.add_argument("--student-model", default=None, help="its fastcae.models name (with --student)")
    ex.add_argument("--num-classes", type=int, default=None)
    ex.add_argument("--image-shape", default=None, help="C,H,W (with --student)")
    ex.add_argument("--mean", default=None, help="per-channel mean, comma-separated (with --student)")
    ex.add_argument("--std", default=None, help="per-channel std, comma-separated (with --student)")
    ex.add_argument("--out", required=True, help="student.pt2 or student.onnx")
    ex.add_argument("--device", default="cpu", help="the device the .pt2 is compiled for (cpu or cuda)")
    ex.add_argument("--runner", default=None, metavar="FASTCAE_RUN",
                    help="check the .pt2 with this native runner (build/fastcae-run) instead of Python's loader")


def _cmd_demo(args) -> int:
    from .demo import format_table, run_demo

    options = {"profile": args.profile} if args.profile else {}
    summary = run_demo(args.out, budget_seconds=args.budget, seed=args.seed, device=args.device,
                       progress=not args.no_progress, use_cache=not args.no_cache, **options)
    if summary is None:  # a torchrun process other than rank 0: rank 0 reports
        return 0
    print(format_table(summary))
    print(f"\npictures: {Path(args.out) / 'synthesised.png'}, {Path(args.out) / 'accuracy.png'}; "
          f"record: {Path(args.out) / 'summary.json'}; student: {Path(args.out) / 'student.pt'} "
          f"(`fastcae export --run {args.out} --out student.pt2` ships it)")
    return 0


def _cmd_export(args) -> int:
    from .export import StudentCard, export_student, read_student

    given = {"--student-model": args.student_model, "--num-classes": args.num_classes,
             "--image-shape": args.image_shape, "--mean": args.mean, "--std": args.std}
    if args.run is None:
        if args.student is None:
            raise ValueError("give --run DIR (a fastcae demo/distill output) or --student with --student-model, "
                             "--num-classes, --image-shape, --mean and --std")
        missing = [k for k, v in given.items() if v is None]
        if missing:
            raise ValueError(f"--student needs {', '.join(missing)} too (or give --run DIR)")
        shape = tuple(int(v) for v in args.image_shape.split(","))
        card = StudentCard(args.student_model, args.num_classes, shape, _floats(args.mean), _floats(args.std))
        student, card = read_student(weights=args.student, card=card)
    else:
        student, card = read_student(args.run, weights=args.student)
    report = export_student(student, card, args.out, device=args.device, runner=args.runner)
    print(f"exported {card.model} ({card.num_classes} classes, input {'x'.join(map(str, card.image_shape))} in "
          f"[0, 1]) to {report.path}: {report.bytes / 1e6:.1f} MB, {report.seconds:.0f} s, logits within "
          f"{report.max_abs_diff:.1e} of the eager student")
    return 0


def _from_teacher_cfg(teacher, num_classes, class_names, shape, mean, std):
    """Fill what the user left out from the teacher's ``pretrained_cfg``: class count, class names (its
    dataset's in ``fastcae.datasets.DATASETS``, or timm's ``label_names``), image shape and mean/std. A name
    list or statistics that do not fit the run (another class count, another channel count) are not taken."""
    cfg = getattr(teacher, "pretrained_cfg", None) or {}
    if num_classes is None and class_names is None:
        num_classes = cfg.get("num_classes")
    if class_names is None:
        dataset = DATASETS.get(cfg.get("dataset"))
        names = dataset.class_names if dataset else cfg.get("label_names")
        if names and len(names) == num_classes:
            class_names = list(names)
    if shape is None and cfg.get("input_size"):
        shape = tuple(int(v) for v in cfg["input_size"])
    channels = shape[0] if shape else 3
    if mean is None and len(cfg.get("mean") or ()) == channels:
        mean = tuple(cfg["mean"])
    if std is None and len(cfg.get("std") or ()) == channels:
        std = tuple(cfg["std"])
    return num_classes, class_names, shape, mean, std


def _cmd_distill(args) -> int:
    from ..api import distill
    from ..models import resolve_model

    if args.list_presets:
        print(format_presets_table())
        return 0
    if not args.teacher:
        raise ValueError("give --teacher (the teacher's weights)")
    names = {f.name for f in dataclasses.fields(DistillConfig)}
    options = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep or key not in names:
            raise SystemExit(f"--set {item!r}: expected KEY=VALUE with KEY a DistillConfig field")
        options[key] = _parse_value(value)
    if getattr(args, "budget", None) is not None and args.command == "distill":
        options["max_seconds"] = args.budget
    pair = get_preset(args.preset) if args.preset in list_presets(pairs=True) else None
    teacher_model = args.teacher_model or (pair.teacher if pair else None)
    student_model = args.student_model or (pair.student if pair else None)
    if teacher_model is None or student_model is None:
        raise ValueError("give --teacher-model and --student-model, or a pair --preset (see fastcae presets)")
    shape = tuple(int(v) for v in args.image_shape.split(",")) if args.image_shape else (
        pair.image_shape if pair else None)
    class_names = _class_names(args.class_names)
    if class_names is None and pair is not None and args.num_classes in (None, pair.num_classes):
        class_names = pair.prompt_names
    num_classes = args.num_classes or (len(class_names) if class_names else None)
    # left out, the class count and input channels are the teacher's own (its constructor's defaults)
    teacher = resolve_model(teacher_model, num_classes=num_classes, weights=args.teacher,
                            **({"in_chans": shape[0]} if shape else {}))
    mean, std = (_floats(args.mean) if args.mean else None), (_floats(args.std) if args.std else None)
    if pair is None:  # what the user left out, the teacher's config says (a pair preset says it otherwise)
        num_classes, class_names, shape, mean, std = _from_teacher_cfg(teacher, num_classes, class_names, shape,
                                                                       mean, std)
    shape = shape or (3, 32, 32)
    if num_classes is None:
        raise SystemExit("give --num-classes or --class-names")
    torch.manual_seed(int(options.get("seed", DistillConfig.seed)))  # the student's initial weights follow the seed
    student = resolve_model(student_model, num_classes=num_classes, in_chans=shape[0])
    if args.student_init:
        load_weights(student, args.student_init)
    out = Path(args.out)
    result = distill(teacher, student, class_names, num_classes=num_classes, image_shape=shape, mean=mean, std=std,
                     preset=args.preset, checkpoint_dir=out / "checkpoints", progress=not args.no_progress,
                     profile=args.profile,
                     **options)
    if not distributed.current().main:  # under torchrun rank 0 writes the run's files
        return 0
    out.mkdir(parents=True, exist_ok=True)
    result.save(out, model=student_model)  # student.pt + student.json: `fastcae export --run OUT` takes it
    (out / "history.json").write_text(json.dumps(result.history, indent=1))
    (out / "config.json").write_text(json.dumps(result.config.to_dict(), indent=1))
    print(f"student saved to {out / 'student.pt'} after {len(result.history)} epochs")
    if pair is not None:
        e = pair.expected
        print(f"published for {pair.name}: teacher {e['teacher']}%, Fast-10 {e['fast10']}%, CMI {e['cmi']}%"
              + (f", NAYER ~{e['nayer']}%" if e["nayer"] is not None else ""))
    return 0


def _cmd_profile(args) -> int:
    """``fastcae distill`` (or the demo, without a teacher) with the report on; prints the summary."""
    from ..profiling import format_report_summary

    out = Path(args.out)
    report = Path(args.report) if args.report else out / "profile.json"
    report.parent.mkdir(parents=True, exist_ok=True)
    if args.teacher is None:
        if args.preset is not None or args.set:
            raise ValueError("--preset and --set profile a distillation of your teacher: give --teacher too "
                             "(without it, fastcae profile runs the digits demo)")
        from .demo import run_demo

        run_demo(out, budget_seconds=args.budget, progress=not args.no_progress, profile=str(report))
    else:
        args.profile = str(report)
        _cmd_distill(args)
    print(format_report_summary(report))
    return 0


def _cmd_presets(args) -> int:
    print(format_presets_table())
    return 0


def _cmd_train_teacher(args) -> int:
    from ..models import create_model, list_models
    from . import data
    from .teacher import TeacherRecipe, train_teacher

    if args.model not in list_models():  # before the (slow) data loading
        raise ValueError(f"unknown model {args.model!r}; known models: {', '.join(list_models())}")
    # read through the module, so tests (and users) can substitute the loader
    train = data.load_torchvision(args.dataset, args.data_root, train=True, download=args.download)
    test = data.load_torchvision(args.dataset, args.data_root, train=False, download=args.download)
    info = DATASETS.get(args.dataset.lower())
    if info is not None:
        num_classes, mean, std = info.num_classes, info.mean, info.std
    else:  # no published normalisation: measure it on the training split
        num_classes = int(train.labels.max()) + 1
        mean, std = train.channel_stats()
    recipe = TeacherRecipe(dataset=args.dataset.lower(), model=args.model, num_classes=num_classes,
                           epochs=args.epochs, lr=args.lr, momentum=args.momentum, weight_decay=args.weight_decay,
                           batch_size=args.batch_size, padding=train.images.shape[-2] // 8, flip=not args.no_flip,
                           seed=args.seed)
    torch.manual_seed(args.seed)  # the initial weights follow the seed too
    model = create_model(args.model, num_classes=num_classes, in_chans=train.images.shape[1])
    summary = train_teacher(model, train, test, recipe, mean, std, args.out, device=args.device,
                            eval_every=args.eval_every, stop_after=args.stop_after, progress=not args.no_progress)
    out = Path(args.out)
    if not summary["finished"]:
        print(f"stopped after epoch {summary['epochs_done']} of {recipe.epochs}; run the same command to resume "
              f"from {out / 'checkpoint.pt'}")
        return 0
    acc = summary["test_accuracy"]
    print(f"teacher saved to {out / 'teacher.pt'} ({recipe.model} on {recipe.dataset}, test accuracy "
          f"{100 * acc:.2f}%); record: {out / 'teacher.json'}")
    return 0


def _cmd_transfer(args) -> int:
    from ..models import create_model, model_default_cfg
    from .transfer import format_results, is_bundled, load_transfer_dataset, run_transfer

    cfg = model_default_cfg(args.student_model)
    registered = tuple(cfg.get("input_size", ()))
    in_chans = args.in_chans or (registered[0] if registered else 1)
    image_size = args.image_size or (16 if is_bundled(args.dataset) or not registered else registered[-1])
    # the data first: a wrong path or shape is reported before any weights are read
    train, test = load_transfer_dataset(args.dataset, image_size=image_size, in_chans=in_chans, resize=args.resize,
                                        split_seed=args.split_seed)
    student = load_weights(create_model(args.student_model, num_classes=args.num_classes, in_chans=in_chans),
                           args.student)
    mean = _floats(args.mean) if args.mean else tuple(cfg.get("mean", ()))
    std = _floats(args.std) if args.std else tuple(cfg.get("std", ()))
    if len(mean) != in_chans:
        mean = (0.5,) * in_chans
    if len(std) != in_chans:
        std = (0.5,) * in_chans
    both = not (args.probe or args.finetune)
    results = run_transfer(student, train, test, mean, std, probe=args.probe or both,
                           finetune=args.finetune or both, probe_epochs=args.probe_epochs, epochs=args.epochs,
                           lr=args.lr, batch_size=args.batch_size, flip=args.flip, device=args.device,
                           seed=args.seed)
    results.update(student_model=args.student_model, dataset=args.dataset, image_size=image_size,
                   mean=list(mean), std=list(std))
    print(f"{args.student_model} on {args.dataset} ({len(train)} train / {len(test)} test images)")
    print(format_results(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"demo": _cmd_demo, "distill": _cmd_distill, "profile": _cmd_profile, "presets": _cmd_presets,
                    "train-teacher": _cmd_train_teacher, "transfer": _cmd_transfer, "export": _cmd_export}
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, TeacherCheckpointError) as err:
        print(f"fastcae: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
