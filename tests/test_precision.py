"""The precision and memory-format policy: QAT stays exact under bf16, fp32 and bf16 agree."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch

from seqsearch.chain import ChainRunner, plan
from seqsearch.config import TrainSection, parse_study
from seqsearch.errors import SeqsearchError
from seqsearch.precision import native_bf16, policy_settings, resolve_policy
from seqsearch.stages import StageContext
from seqsearch.stages.quant_layers import QConv2d, QLinear, to_quant

CPU = torch.device("cpu")


def test_auto_takes_bf16_only_where_native():
    policy = resolve_policy("auto", "auto", CPU)
    assert policy.dtype == (torch.bfloat16 if native_bf16(CPU) else None)
    assert not policy.channels_last  # CPU: contiguous unless asked (see resolve_policy)
    assert resolve_policy("bf16", "contiguous", CPU).dtype is torch.bfloat16
    assert resolve_policy("fp32", "channels_last", CPU).channels_last
    assert resolve_policy("fp16", "auto", CPU).scaled
    with pytest.raises(ValueError, match="precision 'fp8'"):
        resolve_policy("fp8", "auto", CPU)


def test_study_rejects_an_unknown_precision():
    raw = {"version": 1, "name": "t", "model": {"name": "tiny"},
           "train": {"precision": "fp8"}}
    with pytest.raises(SeqsearchError, match="train.precision"):
        parse_study(raw)


def test_channels_last_policy_converts_model_and_batch():
    policy = resolve_policy("fp32", "channels_last", CPU)
    conv = policy.model(torch.nn.Conv2d(3, 8, 3))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = policy.batch(torch.zeros(2, 3, 8, 8))
    assert x.is_contiguous(memory_format=torch.channels_last)
    assert policy.batch(torch.zeros(2, 5)).shape == (2, 5)  # only 4-D batches change


@pytest.mark.parametrize(("wbits", "abits"), [(2, 2), (4, 4), (4, 8), (8, 8)])
def test_fake_quant_keeps_exact_levels_under_bf16(wbits, abits):
    torch.manual_seed(0)
    layer = to_quant(torch.nn.Conv2d(64, 64, 3), wbits, abits)
    assert isinstance(layer, QConv2d)
    x = torch.rand(4, 64, 12, 12) * 3.0
    layer.calibrate(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        xq, wq = layer.quantized(x)
        xq_low, _ = layer.quantized(x.bfloat16())  # what a bf16 layer before it hands over
        out = layer(x)
    assert xq.dtype == torch.float32 and wq.dtype == torch.float32
    assert torch.unique(wq).numel() == 2**wbits
    assert torch.unique(xq).numel() == 2**abits  # unsigned inputs spanning the range
    # a bf16 input reaches fewer levels, but every value is still exactly on the fp32 grid
    steps = torch.unique(xq_low) / layer.act_scale * (2**abits - 1)
    assert (steps - steps.round()).abs().max() < 1e-4
    assert out.dtype == torch.bfloat16  # the conv itself runs under the autocast
    linear = to_quant(torch.nn.Linear(256, 16), wbits, abits)
    assert isinstance(linear, QLinear)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _, wq = linear.quantized(torch.randn(2, 256))
    assert wq.dtype == torch.float32 and torch.unique(wq).numel() == 2**wbits


def test_fp32_and_bf16_runs_of_a_short_chain_agree(stage_setup):
    """P then Q on the same trained model and seed, once in fp32 and once under bf16
    autocast: the final test accuracies agree within 5 points (the test split has 60 images,
    1.7 points each: 3 images; measured here 3.3 points, emulated bf16 on an AVX2 CPU), and
    the BitOps, which do not depend on precision, are equal."""
    model, data, ctx, ref = stage_setup
    finals = {}
    for precision in ("fp32", "bf16"):
        train = TrainSection(**{**ctx.train.model_dump(), "precision": precision})
        c = StageContext(data, train, ctx.seed, ctx.first_last_bits, progress=False)
        runner = ChainRunner(copy.deepcopy(model), data, c, ref, None, "prec")
        result = runner.run(plan([("prune", {"ratio": 0.3}),
                                  ("quantize", {"weight_bits": 4, "act_bits": 8})]))
        finals[precision] = result.records[-1]
    assert finals["fp32"]["bitops"] == finals["bf16"]["bitops"]
    assert abs(finals["fp32"]["accuracy"] - finals["bf16"]["accuracy"]) <= 0.05 + 1e-6


def test_environment_records_the_policy_each_step_ran(tmp_path):
    from seqsearch.environment import record, recorded_policy

    assert recorded_policy(tmp_path) is None
    record(tmp_path, "probe", CPU, TrainSection(precision="bf16", memory_format="contiguous"))
    record(tmp_path, "baseline", CPU, TrainSection(precision="fp32", memory_format="contiguous"))
    kept = json.loads((tmp_path / "environment.json").read_text())
    assert kept["probe"]["policy"]["precision"] == "bf16"
    assert kept["baseline"]["policy"]["requested"]["precision"] == "fp32"
    assert kept["baseline"]["native_bf16"] == native_bf16(CPU)
    assert recorded_policy(tmp_path) == {"precision": "fp32", "memory_format": "contiguous"}


def _chain_file(folder, output, policy: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "chain.yaml"
    path.write_text(f"version: 1\nname: c\ndevice: cpu\nmodel: {{name: tiny}}\noutput: {output}\n"
                    f"stages: [{{stage: prune}}]\n{policy}")
    return path


@pytest.mark.parametrize("native", [True, False], ids=["native-bf16", "no-native-bf16"])
def test_apply_reproduces_the_pinned_policy_and_leaves_the_chain_folder(tmp_path, monkeypatch,
                                                                         native):
    """Run both ways on any CPU (native bf16 patched): what `auto` means must not decide what
    apply trains under when the chain pins a policy."""
    from seqsearch.apply_settings import apply_settings
    from seqsearch.config import load_chain

    monkeypatch.setattr("seqsearch.precision.native_bf16", lambda device: native)
    monkeypatch.setattr("seqsearch.apply_settings.native_bf16", lambda device: native)
    study = tmp_path / "study"
    path = _chain_file(study, study, "policy: {precision: fp32, memory_format: channels_last}\n")
    got = apply_settings(load_chain(path), path)
    assert got.cfg.train.precision == "fp32"  # what the chain ran under, not `auto`
    assert got.cfg.train.memory_format == "channels_last"
    assert not _same(got.work_dir, study) and not _same(got.model_path.parent, study)
    assert got.cfg.output_dir() == got.work_dir
    assert any("left as it is" in n for n in got.notes)
    assert apply_settings(load_chain(path), path, precision="bf16").cfg.train.precision == "bf16"
    fp16 = _chain_file(tmp_path / "f", tmp_path / "f-run",
                       "policy: {precision: fp16, memory_format: contiguous}\n")
    got = apply_settings(load_chain(fp16), fp16)
    assert got.cfg.train.precision == "fp32" and "needs a CUDA GPU" in got.notes[-1]
    assert got.model_path == fp16.with_suffix(".pt")  # a chain elsewhere: as before
    bf16 = _chain_file(tmp_path / "b", tmp_path / "b-run",
                       "policy: {precision: bf16, memory_format: contiguous}\n")
    got = apply_settings(load_chain(bf16), bf16)
    assert got.cfg.train.precision == "bf16"
    assert any("only emulates" in n for n in got.notes) is not native
    plain = _chain_file(tmp_path / "p", tmp_path / "p-run")
    assert apply_settings(load_chain(plain), plain).cfg.train.precision == "auto"
    here = policy_settings(resolve_policy("auto", "auto", CPU))  # what auto means here
    assert here["precision"] == ("bf16" if native else "fp32")
    same = _chain_file(tmp_path / "s", tmp_path / "s-run", f"policy: {json.dumps(here)}\n")
    pinned = apply_settings(load_chain(same), same).cfg
    assert pinned.train.precision == here["precision"]
    # written out explicitly, it still finds the baseline the chain's own `auto` trained
    assert pinned.baseline_key() == load_chain(same).baseline_key()


def test_apply_pins_the_threads_the_chain_trained_with(tmp_path):
    from seqsearch.apply_settings import apply_settings
    from seqsearch.config import load_chain

    one = _chain_file(tmp_path / "o", tmp_path / "o-run",
                      "policy: {precision: fp32, memory_format: contiguous, threads: 1}\n")
    got = apply_settings(load_chain(one), one)
    assert (got.baseline_threads, got.stage_threads) == (1, [1])
    assert any("threads 1" in n for n in got.notes)
    mixed = _chain_file(tmp_path / "m", tmp_path / "m-run",
                        "policy: {precision: fp32, memory_format: contiguous, threads: [2, 1]}\n")
    got = apply_settings(load_chain(mixed), mixed)
    assert (got.baseline_threads, got.stage_threads) == (2, [1])
    got = apply_settings(load_chain(mixed), mixed, threads=3)  # --threads overrides, said
    assert got.stage_threads is None and "figures may differ" in got.notes[-1]
    bad = _chain_file(tmp_path / "x", tmp_path / "x-run",
                      "policy: {precision: fp32, memory_format: contiguous, threads: [1]}\n")
    with pytest.raises(SeqsearchError, match="policy.threads"):
        load_chain(bad)


def test_a_bad_pinned_policy_is_one_clear_error(tmp_path):
    from seqsearch.config import load_chain

    path = _chain_file(tmp_path, tmp_path / "run", "policy: {precision: fp8, "
                       "memory_format: contiguous}\n")
    with pytest.raises(SeqsearchError, match="policy.precision"):
        load_chain(path)


def _same(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()
