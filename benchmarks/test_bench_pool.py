"""The pool: the in-memory pool against a directory of PNGs re-decoded each epoch.

Measured in images per second fed to the student. One timed call is one epoch over the pool: every batch
the student would consume, each ending as a normalised, augmented (random crop with padding 4, horizontal
flip, CIFAR-10 mean/std) float batch on the training device, with a device sync at the end.

- ``pool-uint8`` / ``pool-bf16``: ``fastcae.pool.SyntheticPool`` on the device, ``len(pool) // batch``
  batches of ``pool.sample(batch)`` then ``fastcae.augment.Augment``, all on the device.
- ``png-workers0`` / ``png-workers4``: the prior design (NAYER / Fast-DFKD, ``benchmarks/prior_design.py``):
  one PNG per image, and per epoch a ``DataLoader`` built over the directory that decodes each file with PIL
  and augments it with torchvision transforms on the host, then ``.to(device, non_blocking=True)``.
  The loader is built inside the timed epoch, as the prior code rebuilt it every epoch.

Shapes: CPU, 2,048 images of 3x32x32, batch 256; CUDA, 20,000 images, batch 512; 10 classes. The images
(smooth random images in [0, 1]) and the PNG directory are made once per module, outside the timing.
``extra_info`` records ``images_per_s`` at the median.

Run: ``pytest benchmarks/test_bench_pool.py --benchmark-only``. ``png-workers4`` needs CUDA (the CPU
machine has 2 cores). ``test_png_pool_roundtrip`` checks the baseline itself (not a benchmark).
"""

import pytest
import torch
import torch.nn.functional as F

from benchmarks.prior_design import PNGPool
from benchmarks.scales import DEVICE, sync
from fastcae.augment import Augment
from fastcae.datasets import DATASETS
from fastcae.pool import SyntheticPool

IMAGE_SHAPE = (3, 32, 32)
NUM_CLASSES = 10
MEAN, STD = DATASETS["cifar10"].mean, DATASETS["cifar10"].std
PADDING = 4
# CPU: a small pool and few rounds, to keep this file's CPU run short (the timings there are only a sanity check).
N_IMAGES, BATCH, ROUNDS = (20_000, 512, 10) if DEVICE == "cuda" else (2_048, 256, 3)

POOL_DTYPES = {"pool-uint8": "uint8", "pool-bf16": "bfloat16"}
STORES = [
    "pool-uint8",
    "pool-bf16",
    "png-workers0",
    pytest.param("png-workers4", marks=pytest.mark.skipif(
        DEVICE != "cuda", reason="4 loader workers timed on GPU only (the CPU machine has 2 cores)")),
]


def _smooth_images(n, shape, generator):
    """Random but image-like: low-resolution noise upsampled bilinearly, in [0, 1]."""
    c, h, w = shape
    low = torch.rand(n, c, h // 4, w // 4, generator=generator)
    return F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False).clamp(0, 1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The images, their labels and the PNG directory holding them (writing it is setup, not timed)."""
    g = torch.Generator().manual_seed(0)
    images = _smooth_images(N_IMAGES, IMAGE_SHAPE, g)
    labels = torch.randint(0, NUM_CLASSES, (N_IMAGES,), generator=g)
    png = PNGPool(tmp_path_factory.mktemp("png_pool"), IMAGE_SHAPE)
    png.push(images, labels)
    return images, labels, png


@pytest.mark.parametrize("store", STORES)
def test_pool_epoch(benchmark, data, store):
    images, labels, png = data
    if store.startswith("pool"):
        pool = SyntheticPool(N_IMAGES, IMAGE_SHAPE, device=DEVICE, dtype=POOL_DTYPES[store])
        pool.push(images.to(DEVICE), labels.to(DEVICE), torch.zeros_like(labels, device=DEVICE))
        augment = Augment(MEAN, STD, padding=PADDING, flip=True).to(DEVICE)

        def epoch():
            for _ in range(len(pool) // BATCH):
                x, y, _ = pool.sample(BATCH)
                x = augment(x)
            sync()
            return x, y
    else:
        workers = int(store.removeprefix("png-workers"))

        def epoch():
            loader = png.loader(BATCH, MEAN, STD, PADDING, flip=True, num_workers=workers)
            for x, y in loader:
                x, y = x.to(DEVICE, non_blocking=True), y.to(DEVICE, non_blocking=True)
            sync()
            return x, y

    benchmark.group = "pool epoch"
    x, _ = benchmark.pedantic(epoch, rounds=ROUNDS, warmup_rounds=1, iterations=1)
    assert x.shape == (BATCH, *IMAGE_SHAPE) and x.dtype == torch.float32 and x.device.type == DEVICE
    fed = (N_IMAGES // BATCH) * BATCH  # images the student sees per epoch (the last partial batch is dropped)
    benchmark.extra_info.update(images=fed, batch=BATCH, image_shape=list(IMAGE_SHAPE), store=store, device=DEVICE)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["images_per_s"] = fed / benchmark.stats.stats.median


@pytest.mark.parametrize("channels", [1, 3])
def test_png_pool_roundtrip(tmp_path, channels):
    shape = (channels, 8, 6)
    g = torch.Generator().manual_seed(channels)
    images = torch.rand(10, *shape, generator=g)
    labels = torch.randint(0, NUM_CLASSES, (10,), generator=g)
    png = PNGPool(tmp_path / "pool", shape)
    png.push(images[:4], labels[:4])
    png.push(images[4:], labels[4:])
    assert len(png) == 10
    loader = png.loader(10, (0.0,) * channels, (1.0,) * channels, padding=0, flip=False, shuffle=False)
    (x, y), = list(loader)
    assert x.shape == (10, *shape) and x.dtype == torch.float32
    assert y.dtype == torch.int64 and torch.equal(y, labels)
    torch.testing.assert_close(x, (images * 255).round() / 255, rtol=0, atol=1e-6)
