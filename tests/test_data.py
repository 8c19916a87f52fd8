from __future__ import annotations

import struct
from pathlib import Path

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


def _write_fashion_files(folder, *, n_train: int = 60, n_test: int = 20, gz: bool = True) -> None:
    """The four idx files of Debian's dataset-fashion-mnist, small, with known pixels."""
    import gzip

    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = np.repeat(labels[:, None, None] * 20, 28 * 28, axis=1).reshape(n, 28, 28)
        for stem, array in ((f"{prefix}-images-idx3-ubyte", images),
                            (f"{prefix}-labels-idx1-ubyte", labels)):
            raw = folder / stem
            _write_idx(raw, array)
            if gz:
                (folder / f"{stem}.gz").write_bytes(gzip.compress(raw.read_bytes()))
                raw.unlink()


@pytest.fixture
def fashion_dir(tmp_path, monkeypatch):
    import seqsearch.data as data_mod

    folder = tmp_path / "usr" / "share" / "datasets" / "fashion-mnist"
    _write_fashion_files(folder)
    monkeypatch.setattr(data_mod, "FASHION_MNIST_DIR", folder)
    return folder


def test_fashionmnist_reads_the_debian_files_without_a_root(fashion_dir):
    data = load_data("fashionmnist", val_fraction=0.2, seed=0)
    assert data.input_shape == (1, 28, 28) and data.num_classes == 10
    assert len(data.test) == 20 and len(data.train) + len(data.val) == 60
    # every image is its label's grey level, so labels and pixels must still line up
    means = data.test.x.flatten(1).mean(1)
    per_class = torch.stack([means[data.test.y == k].mean() for k in range(10)])
    assert torch.allclose(means, per_class[data.test.y]) and torch.all(per_class.diff() > 0)


def test_fashionmnist_root_holding_the_unpacked_package(fashion_dir, tmp_path, monkeypatch):
    """`dpkg -x` without root: data.root at the unpacked folder; unzipped files work too."""
    import seqsearch.data as data_mod

    monkeypatch.setattr(data_mod, "FASHION_MNIST_DIR", tmp_path / "nowhere")
    plain = tmp_path / "unzipped"
    _write_fashion_files(plain, gz=False)
    for root in (fashion_dir, plain):
        data = load_data("fashionmnist", root=str(root), seed=0)
        assert len(data.test) == 20


def test_fashionmnist_torchvision_root_still_works(fashion_dir, tmp_path):
    raw = tmp_path / "tv" / "FashionMNIST" / "raw"
    _write_fashion_files(raw, n_train=30, n_test=10, gz=False)
    data = load_data("fashionmnist", root=str(tmp_path / "tv"), seed=0)
    assert len(data.test) == 10 and len(data.train) + len(data.val) == 30


def test_fashionmnist_missing_names_the_package_and_command(tmp_path, monkeypatch):
    import seqsearch.data as data_mod

    monkeypatch.setattr(data_mod, "FASHION_MNIST_DIR", tmp_path / "absent")
    with pytest.raises(SeqsearchError) as info:
        load_data("fashionmnist")
    msg = str(info.value)
    assert "\n" not in msg and "dataset-fashion-mnist" in msg
    assert "apt-get install -y dataset-fashion-mnist" in msg and "dpkg -x" in msg
    with pytest.raises(SeqsearchError, match="apt-get install -y dataset-fashion-mnist"):
        data_mod.check_available("fashionmnist", None)
    with pytest.raises(SeqsearchError, match="holds neither"):
        data_mod.check_available("fashionmnist", str(tmp_path))
    data_mod.check_available("fashionmnist", str(tmp_path), download=True)  # torchvision's
    _write_fashion_files(tmp_path / "FashionMNIST" / "raw", gz=False)
    data_mod.check_available("fashionmnist", str(tmp_path))
    data_mod.check_available("cifar10", None)  # other datasets: their loaders say it


def test_fashionmnist_damaged_file_is_one_line(fashion_dir):
    (fashion_dir / "t10k-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b not gzip")
    with pytest.raises(SeqsearchError, match="t10k-labels.*cannot read") as info:
        load_data("fashionmnist")
    assert "\n" not in str(info.value)
    (fashion_dir / "t10k-labels-idx1-ubyte.gz").unlink()
    _write_idx(fashion_dir / "t10k-labels-idx1-ubyte", np.arange(7) % 10)  # 7 labels, 20 images
    with pytest.raises(SeqsearchError, match="test files hold"):
        load_data("fashionmnist")


def test_test_limit_takes_a_stratified_part_of_the_official_test(fashion_dir):
    data = load_data("fashionmnist", limit=50, test_limit=10, val_fraction=0.5, seed=0)
    assert len(data.test) == 10 and len(data.train) + len(data.val) == 40
    assert torch.bincount(data.test.y, minlength=10).tolist() == [1] * 10
    assert torch.bincount(data.train.y, minlength=10).tolist() == [2] * 10
    assert len(load_data("fashionmnist", test_limit=10, seed=0).test) == 10
    with pytest.raises(SeqsearchError, match="test_limit"):
        load_data("fashionmnist", limit=50, test_limit=50)
    held = load_data("digits", limit=300, test_limit=100, seed=0)  # no official test split
    assert len(held.test) == 100 and len(held.train) + len(held.val) == 200


FASHION_REAL = Path("/usr/share/datasets/fashion-mnist")


@pytest.mark.skipif(not (FASHION_REAL / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed "
                           "(apt-get install -y dataset-fashion-mnist; .ci/run installs it)")
def test_fashionmnist_real_debian_files():
    """The installed package: the official split, 6,000 / 1,000 per class, 28 x 28 grey."""
    from seqsearch.data import DATASETS

    x, y, test = DATASETS["fashionmnist"](None, False, None)
    assert test is not None
    x_test, y_test = test
    assert x.shape == (60000, 1, 28, 28) and x_test.shape == (10000, 1, 28, 28)
    assert torch.bincount(y).tolist() == [6000] * 10
    assert torch.bincount(y_test).tolist() == [1000] * 10
    # the package's mean pixel (0-255): 72.94 train, 73.15 test
    assert float(x.mean()) * 255 == pytest.approx(72.94, abs=0.01)
    assert float(x_test.mean()) * 255 == pytest.approx(73.15, abs=0.01)


def test_dry_run_without_the_package_is_one_line_exit_2(tmp_path, monkeypatch, capsys):
    """As a new user without the package sees it: the plan is refused before anything runs."""
    import seqsearch.data as data_mod
    from seqsearch.cli import main

    monkeypatch.setattr(data_mod, "FASHION_MNIST_DIR", tmp_path / "absent")
    study = tmp_path / "fashion.yaml"
    study.write_text("version: 1\nname: fashion\nmodel: {name: tiny}\n"
                     "data: {name: fashionmnist, limit: 100, test_limit: 20}\n")
    assert main(["run", str(study), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "apt-get install -y dataset-fashion-mnist" in err
    _write_fashion_files(tmp_path / "absent")
    assert main(["run", str(study), "--dry-run", "--json"]) == 0
