from __future__ import annotations

import pytest

from seqsearch.config import load_study, quickstart_path
from seqsearch.errors import SeqsearchError


def write(tmp_path, text: str):
    p = tmp_path / "study.yaml"
    p.write_text(text)
    return p


BASE = "version: 1\nname: s\nmodel: {name: tiny}\n"


def test_quickstart_is_embedded_and_valid():
    assert quickstart_path().is_file()
    study = load_study()
    assert study.name == "quickstart" and study.version == 1
    assert study.first_last_bits == (8, 8)


def test_every_shipped_study_loads():
    for path in quickstart_path().parent.glob("*.yaml"):
        load_study(path)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        ("train: {epoch: 3}\n", "unknown key 'train.epoch'"),
        ("train: {epochs: -1}\n", "train.epochs: Input should be greater than or equal to 0"),
        ("train: {lr: fast}\n", "train.lr"),
        ("data: {name: digits, augment: mixup}\n", "data.augment"),
        ("first_last_bits: [8, 3]\n", "first_last_bits"),
        ("colour: blue\n", "unknown key 'colour'"),
        ("data: {name: fashionmnist, limit: 100, test_limit: 100}\n",
         "data: Value error, test_limit 100 must be smaller than limit 100"),
        ("data: {name: fashionmnist, test_limit: 5}\n", "data.test_limit"),
    ],
)
def test_strict_errors_name_the_key(tmp_path, extra, fragment):
    with pytest.raises(SeqsearchError, match=fragment.replace("[", r"\[")):
        load_study(write(tmp_path, BASE + extra))


def test_version_missing_or_wrong(tmp_path):
    with pytest.raises(SeqsearchError, match="missing key 'version'"):
        load_study(write(tmp_path, "name: s\nmodel: {name: tiny}\n"))
    with pytest.raises(SeqsearchError, match="version 2 is not supported"):
        load_study(write(tmp_path, "version: 2\nname: s\nmodel: {name: tiny}\n"))


def test_bad_yaml_and_missing_file(tmp_path):
    with pytest.raises(SeqsearchError, match="not valid YAML"):
        load_study(write(tmp_path, "version: 1\nname: [unclosed\n"))
    with pytest.raises(SeqsearchError, match="no such file"):
        load_study(tmp_path / "absent.yaml")


def test_baseline_key_changes_with_settings(tmp_path):
    a = load_study(write(tmp_path, BASE))
    b = load_study(write(tmp_path, BASE + "train: {epochs: 3}\n"))
    assert a.baseline_key() != b.baseline_key()
    assert a.baseline_key() == load_study(write(tmp_path, BASE)).baseline_key()


def test_test_limit_enters_the_baseline_key_only_when_set(tmp_path):
    """Set, it is part of the key; unset, the key is as before the setting existed (the
    committed reports' keys: test_studies.py)."""
    a = load_study(write(tmp_path, BASE + "data: {name: fashionmnist, limit: 600}\n"))
    b = load_study(write(tmp_path, BASE + "data: {name: fashionmnist, limit: 600, "
                                          "test_limit: 200}\n"))
    assert a.baseline_key() != b.baseline_key()
