from __future__ import annotations

import json

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


@pytest.mark.parametrize("native", [True, False])
def test_baseline_key_holds_the_policy_as_resolved(tmp_path, monkeypatch, native):
    """`auto` is bf16 on a CPU with AMX and fp32 on one without: the key follows what it
    means, so a baseline trained under one policy is never reused under the other. Run both
    ways on either kind of CPU (native bf16 patched)."""
    monkeypatch.setattr("seqsearch.precision.native_bf16", lambda device: native)
    auto = load_study(write(tmp_path, BASE + "device: cpu\n"))
    bf16 = load_study(write(tmp_path, BASE + "device: cpu\ntrain: {precision: bf16}\n"))
    fp32 = load_study(write(tmp_path, BASE + "device: cpu\ntrain: {precision: fp32}\n"))
    assert auto.resolved_policy()["precision"] == ("bf16" if native else "fp32")
    assert (auto.baseline_key() == bf16.baseline_key()) is native
    assert (auto.baseline_key() == fp32.baseline_key()) is not native
    assert bf16.baseline_key() != fp32.baseline_key()
    recorded = {"precision": "bf16", "memory_format": "contiguous"}
    assert auto.baseline_key(recorded) == bf16.baseline_key()  # as a study recorded it


@pytest.mark.parametrize("native", [True, False])
def test_baseline_metrics_of_a_folder_recorded_under_another_policy(tmp_path, monkeypatch,
                                                                    native):
    """A committed folder (baseline.json, environment.json, no checkpoint) is read the same on
    either kind of CPU; a baseline.json of another policy than the recorded one is refused."""
    from seqsearch.baseline import baseline_metrics

    monkeypatch.setattr("seqsearch.precision.native_bf16", lambda device: native)
    study = load_study(write(tmp_path, BASE + "device: cpu\n"))
    folder = tmp_path / "study"
    folder.mkdir()
    policy = {"precision": "bf16", "memory_format": "contiguous"}
    (folder / "environment.json").write_text(json.dumps({"baseline": {"policy": policy}}))
    (folder / "baseline.json").write_text(json.dumps(
        {"baseline_key": study.baseline_key(policy), "metrics": {"val_accuracy": 0.5}}))
    assert baseline_metrics(study, folder) == {"val_accuracy": 0.5}
    other = {"precision": "fp32", "memory_format": "contiguous"}
    (folder / "environment.json").write_text(json.dumps({"baseline": {"policy": other}}))
    if native:  # auto = bf16 here: the key matches without the record
        assert baseline_metrics(study, folder) == {"val_accuracy": 0.5}
    else:
        with pytest.raises(SeqsearchError, match="no baseline yet"):
            baseline_metrics(study, folder)


def test_test_limit_enters_the_baseline_key_only_when_set(tmp_path):
    """Set, it is part of the key; unset, the key is as before the setting existed (the
    committed reports' keys: test_studies.py)."""
    a = load_study(write(tmp_path, BASE + "data: {name: fashionmnist, limit: 600}\n"))
    b = load_study(write(tmp_path, BASE + "data: {name: fashionmnist, limit: 600, "
                                          "test_limit: 200}\n"))
    assert a.baseline_key() != b.baseline_key()


def test_the_probe_takes_tunings_methods_unless_the_study_says_otherwise():
    """tune.fixed reaches the probe (its verdicts are then about the exported methods);
    probe.fixed still wins (a paper replication), and keys of stages not enabled stay out."""
    from seqsearch.config import parse_study

    raw = {"version": 1, "name": "x", "model": {"name": "resnet8"},
           "stages": ["distill", "quantize"],
           "tune": {"fixed": {"quantize.method": "lsq", "distill.init": "teacher",
                              "prune.importance": "taylor"}}}
    study = parse_study(raw)
    assert study.probe_fixed() == {"quantize.method": "lsq", "distill.init": "teacher"}
    paper = parse_study({**raw, "probe": {"fixed": {"quantize.method": "dorefa"}}})
    assert paper.probe_fixed() == {"quantize.method": "dorefa", "distill.init": "teacher"}
    assert paper.tune_fixed()["quantize.method"] == "lsq"


def test_committed_studies_keep_the_methods_they_ran_with():
    """The committed CPU studies' probes ran DoReFa and a student from scratch, the paper
    studies DoReFa with heads-only exits: set in their files, so the new default (the probe
    takes tuning's methods) does not change what they replay."""
    from pathlib import Path

    from seqsearch.config import load_study
    from seqsearch.search.scope import methods

    root = Path(__file__).parent.parent / "seqsearch" / "studies"
    for name in ("vgg11-mnist5k", "resnet20-mnist5k"):
        s = load_study(root / f"{name}.yaml")
        got = methods(s, s.probe_fixed())
        assert got["quantize.method"] == "dorefa" and got["distill.init"] == "scratch"
        assert methods(s, s.tune_fixed())["quantize.method"] == "lsq"
    for path in sorted((root / "paper").glob("*.yaml")):
        got = methods(load_study(path), load_study(path).probe_fixed())
        assert got["quantize.method"] == "dorefa" and got["early_exit.training"] == "heads"


def test_the_page_says_which_methods_the_verdicts_saw():
    from seqsearch.report.verdicts import methods_text

    text = methods_text({"quantize.method": "dorefa", "distill.init": "scratch"},
                        {"quantize.method": "lsq", "distill.init": "scratch"})
    assert "quantize.method dorefa" in text and "tunes with quantize.method lsq" in text
    assert "does not use" in text
    same = methods_text({"quantize.method": "lsq"}, {"quantize.method": "lsq"})
    assert same.startswith("Verdicts measured with the methods the export uses")


@pytest.mark.parametrize("pairs, message", [
    (["DEE"], "not a pair of two different stage letters"),
    (["DD"], "not a pair of two different stage letters"),
    (["D1"], "not a pair of two different stage letters"),
    (["DE", "ED"], "listed twice"),
    ([], "at least 1"),
])
def test_probe_pairs_are_checked_strictly(pairs, message):
    from seqsearch.config import parse_study
    from seqsearch.errors import SeqsearchError

    with pytest.raises(SeqsearchError, match=message) as err:
        parse_study({"version": 1, "name": "x", "model": {"name": "resnet8"},
                     "probe": {"pairs": pairs}}, "s.yaml")
    assert "probe.pairs" in str(err.value) and "\n" not in str(err.value)


def test_probe_pairs_name_enabled_stages_and_narrow_the_probe():
    """[ed, PE, QE] is the E control's subset: normalised to the stages' order; a letter of a
    stage the study does not enable is an error naming the key; the dry run and the family
    count only those pairs."""
    from seqsearch.config import parse_study
    from seqsearch.errors import SeqsearchError
    from seqsearch.pipeline import criteria
    from seqsearch.search.plan import dry_run
    from seqsearch.search.probe import pair_units
    from seqsearch.search.scope import study_pairs

    raw = {"version": 1, "name": "x", "model": {"name": "resnet8"},
           "probe": {"pairs": ["ed", "PE", "QE"]}}
    study = parse_study(raw)
    assert study_pairs(study) == ["DE", "PE", "QE"]
    units = pair_units("DPQE", 1, [0], pairs=study_pairs(study))
    assert {u.order for u in units if u.kind == "pair"} == {"DE", "ED", "PE", "EP", "QE", "EQ"}
    assert dry_run(study)["pairs"] == ["DE", "PE", "QE"]
    assert criteria(study, {"val_accuracy": 0.98}, 100).pairs == ("DE", "PE", "QE")
    bad = parse_study({**raw, "stages": ["distill", "prune", "quantize"]})
    with pytest.raises(SeqsearchError, match="probe.pairs: 'ED' names E, not an enabled"):
        study_pairs(bad)
