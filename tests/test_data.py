from __future__ import annotations

import struct

import numpy as np
import pytest
import torch

from seqsearch.data import augment_batch, batches, load_data, stratified_indices
from seqsearch.errors import SeqsearchError


def test_digits_splits_are_disjoint_stratified_and_seeded():
    a = load_data("digits", seed=0)
    b = load_data("digits", seed=0)
    c = load_data("digits", seed=1)
    assert len(a.train) + len(a.val) + len(a.test) == 1797
    assert a.input_shape == (1, 8, 8) and a.num_classes == 10
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.test.y, b.test.y)
    assert not torch.equal(a.train.y, c.train.y)
    # every class is present in every split in about the same share
    for split in (a.train, a.val, a.test):
        counts = torch.bincount(split.y, minlength=10).float()
        assert counts.min() > 0
        assert (counts / counts.sum()).max() < 0.15
    # train split is normalised
    assert abs(float(a.train.x.mean())) < 1e-4


def test_stratified_indices_partition():
    y = torch.arange(100) % 4
    parts = stratified_indices(y, [0.2, 0.4, 1.0], seed=3)
    joined = torch.cat(parts)
    assert sorted(joined.tolist()) == list(range(100))
    assert [len(p) for p in parts] == [20, 40, 40]


def test_mnist5k_embedded():
    data = load_data("mnist5k", limit=500, seed=0)
    assert data.input_shape == (1, 28, 28)
    assert len(data.train) + len(data.val) + len(data.test) == 500
    assert data.num_classes == 10


def test_limit_and_image_size():
    data = load_data("digits", limit=200, image_size=16, seed=0)
    assert data.input_shape == (1, 16, 16)
    assert len(data.train) + len(data.val) + len(data.test) == 200


def test_unknown_dataset_and_augment():
    with pytest.raises(SeqsearchError, match="unknown dataset 'cifar11'"):
        load_data("cifar11")
    with pytest.raises(SeqsearchError, match="data.augment"):
        load_data("digits", augment="mixup")


def test_missing_torchvision_folder_names_path_and_flag(tmp_path):
    root = tmp_path / "nowhere"
    with pytest.raises(SeqsearchError, match=f"{root}.*download"):
        load_data("cifar10", root=str(root), download=False)


def _write_idx(path, array: np.ndarray) -> None:
    dims = array.shape
    header = struct.pack(">HBB", 0, 0x08, len(dims)) + struct.pack(">" + "I" * len(dims), *dims)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def test_torchvision_mnist_on_small_made_data(tmp_path):
    """The torchvision code path, on idx files we make (no download)."""
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 60), ("t10k", 20)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    data = load_data("mnist", root=str(tmp_path), download=False, seed=0)
    assert data.input_shape == (1, 28, 28)
    assert len(data.test) == 20 and len(data.train) + len(data.val) == 60


def test_imagefolder_on_small_made_images(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("test", 2)):
        for cls in ("cat", "dog"):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
                Image.fromarray(img).save(folder / f"{i}.png")
    data = load_data("imagefolder", root=str(tmp_path), image_size=16, val_fraction=0.2, seed=0)
    assert data.input_shape == (3, 16, 16)
    assert data.num_classes == 2 and len(data.test) == 4


def test_augment_keeps_shape_and_is_seeded(digits_small):
    x = digits_small.train.x[:16]
    a = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0))
    b = augment_batch(x, "crop_flip", torch.Generator().manual_seed(0))
    assert a.shape == x.shape and torch.equal(a, b)
    assert not torch.equal(a, x)
    assert torch.equal(augment_batch(x, "none", torch.Generator()), x)


def test_batches_cover_split_once(digits_small):
    seen = torch.cat([y for _, y in batches(digits_small.train, 50, shuffle=True,
                                            gen=torch.Generator().manual_seed(0))])
    assert sorted(seen.tolist()) == sorted(digits_small.train.y.tolist())
