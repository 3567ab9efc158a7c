"""What is known about the named datasets: class names, image shape and the normalisation of the input.

The one home of these facts: the pair presets, ``distill``'s default input, the teacher recipe (``fastcae
train-teacher``), the zoo models' ``default_cfg`` and the demos all read them here. Plain data that imports
nothing of fastcae, so the model zoo (``fastcae.models``) can read its default input from it too, as timm's
models read ``timm.data.constants``.
"""

from __future__ import annotations

from dataclasses import dataclass

DIGIT_NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

# CIFAR-100 fine labels in torchvision's order (``torchvision.datasets.CIFAR100(...).classes``).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger",
    "tractor", "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)


@dataclass(frozen=True)
class DatasetInfo:
    """What a teacher trained on: class names, image shape and the normalisation of its input."""

    name: str
    class_names: tuple[str, ...]
    image_shape: tuple[int, int, int]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


# Normalisation as the CIFAR DFKD code bases (CMI, Fast-DFKD, NAYER) train and evaluate their teachers with
# (METHOD.md section 6), so their published teachers are fed what they expect. For CIFAR-10 that std,
# (0.2023, 0.1994, 0.2010), is the widely copied figure, not the training set's per-channel pixel std
# (0.2470, 0.2435, 0.2616, torchvision's); kept for compatibility with those teachers and with every teacher
# ``fastcae train-teacher`` has trained. CIFAR-100's statistics differ from CIFAR-10's (mean 0.5071 vs 0.4914).
DATASETS = {
    "cifar10": DatasetInfo("cifar10", CIFAR10_CLASSES, (3, 32, 32), (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": DatasetInfo("cifar100", CIFAR100_CLASSES, (3, 32, 32), (0.5071, 0.4867, 0.4408),
                            (0.2675, 0.2565, 0.2761)),
}
