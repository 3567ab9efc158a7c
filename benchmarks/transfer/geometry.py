"""Why CNCL does or does not help transfer: the geometry of the students' penultimate features.

    python -m benchmarks.transfer.geometry --students DIR [--out FILE.json]

Reads the students ``benchmarks.transfer.run --students DIR`` saved and measures, per student, on CIFAR-10's
test images (the teacher's task) and on the CIFAR-100 probe set (the downstream task):
- ``collapse``: within-class variance over total variance of the standardised features (CIFAR-10 classes). A
  supervised contrastive loss on class labels pulls every class towards one point; lower is more collapsed.
- ``effective_rank``: the participation ratio ``(sum l)^2 / sum l^2`` of the feature covariance's eigenvalues
  on CIFAR-100 images: how many directions the features use on images of other classes.
- ``class_mean_cosine``: the mean cosine between CIFAR-10 class means (centred): how far apart classes sit.
Seconds per student: a forward pass over 20,000 images.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from pathlib import Path

import torch

from fastcae.apps.transfer import extract_features
from fastcae.models import resolve_model

from ..fidelity.natural import cifar10_test
from .run import STUDENT, cifar100_probe


def geometry(model: torch.nn.Module, cifar10, cifar100, mean, std) -> dict:
    f10 = extract_features(model, cifar10.images, mean, std).double()
    f100 = extract_features(model, cifar100.images, mean, std).double()
    z = (f10 - f10.mean(0)) / f10.std(0).clamp_min(1e-8)
    total = z.var(0).sum()
    means = torch.stack([z[cifar10.labels == c].mean(0) for c in range(10)])
    within = sum(z[cifar10.labels == c].var(0).sum() * (cifar10.labels == c).sum() for c in range(10)) / len(z)
    unit = torch.nn.functional.normalize(means, dim=1)
    cos = unit @ unit.T
    off = cos[~torch.eye(10, dtype=torch.bool)]
    eig = torch.linalg.eigvalsh(torch.cov(f100.T)).clamp_min(0)
    return {"collapse": float(within / total), "effective_rank": float(eig.sum() ** 2 / eig.pow(2).sum()),
            "class_mean_cosine": float(off.mean()), "features": int(f10.shape[1])}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=Path, required=True)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    cifar10, cifar100 = cifar10_test(), cifar100_probe()
    rows: dict[str, list[dict]] = {}
    for path in sorted(args.students.glob("*.pt")):
        name = re.sub(r"-seed\d+$", "", path.stem)
        model = resolve_model(STUDENT)
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        cfg = model.pretrained_cfg
        rec = {"file": path.name, **geometry(model.eval(), cifar10, cifar100, cfg["mean"], cfg["std"])}
        rows.setdefault(name, []).append(rec)
        print(f"{path.stem:40s} collapse {rec['collapse']:.3f}  effective rank {rec['effective_rank']:5.1f}  "
              f"class-mean cosine {rec['class_mean_cosine']:+.3f}", flush=True)
    summary = {name: {k: statistics.fmean(r[k] for r in recs) for k in ("collapse", "effective_rank",
                                                                         "class_mean_cosine")}
               for name, recs in rows.items()}
    for name, s in summary.items():
        print(f"{name:32s} mean: collapse {s['collapse']:.3f}  effective rank {s['effective_rank']:5.1f}  "
              f"class-mean cosine {s['class_mean_cosine']:+.3f}")
    if args.out is not None:
        args.out.write_text(json.dumps({"students": rows, "mean": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
