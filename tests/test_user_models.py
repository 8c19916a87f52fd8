"""What a new user brings: torchvision builders, their own model files, files that are wrong."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import run_cli

from seqsearch.chain import load_model
from seqsearch.cli import main
from seqsearch.errors import SeqsearchError
from seqsearch.models import build_model, create_model, resolve_factory

ZOO = Path(__file__).parent / "zoo"


def _fails_in_one_line(*argv: str, fragment: str) -> None:
    proc = run_cli(*argv, check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_num_classes_reaches_a_kwargs_factory(capsys):
    """torchvision's builders take num_classes through **kwargs (and reject in_channels)."""
    model = create_model("torchvision.models:squeezenet1_1", in_channels=3, num_classes=7)
    assert sum(p.numel() for p in model.parameters()) == 726_087  # the 7-class model
    proc = run_cli("count", "torchvision.models:squeezenet1_1", "--input-shape", "3,64,64",
                   "--num-classes", "7", "--json")
    assert json.loads(proc.stdout)["params"] == 726_087


def test_output_width_is_checked(tmp_path):
    spec = tmp_path / "m.py"
    spec.write_text("from torch import nn\n\ndef f(**kwargs):\n"
                    "    return nn.Sequential(nn.Flatten(), nn.Linear(64, 4))\n")
    with pytest.raises(SeqsearchError, match=r"expected 10 class logits.*shape \(2, 4\)"):
        build_model(f"{spec}:f", input_shape=(1, 8, 8), num_classes=10)
    _fails_in_one_line("count", f"{spec}:f", "--input-shape", "1,8,8",
                       fragment="expected 10 class logits")


def test_grayscale_is_repeated_for_an_rgb_model(tmp_path):
    model = build_model("torchvision.models:resnet18", input_shape=(1, 32, 32), num_classes=10)
    assert model(torch.zeros(2, 1, 32, 32)).shape == (2, 10)
    path = tmp_path / "m.pt"
    torch.save(model, path)  # the repeat is a module-level hook: a whole-model save keeps it
    again = torch.load(path, weights_only=False).eval()
    assert again(torch.zeros(1, 1, 32, 32)).shape == (1, 10)
    proc = run_cli("count", "torchvision.models:resnet18", "--input-shape", "1,32,32")
    assert proc.returncode == 0
    _fails_in_one_line("count", "torchvision.models:resnet18", "--input-shape", "2,32,32",
                       fragment="wants 3 input channels, the data has 2")


def test_the_grayscale_note_is_said_once(tmp_path):
    code = ("import os; os.environ['SEQSEARCH_QUIET'] = '0'\n"
            "from seqsearch.models import build_model\n"
            "for _ in range(3):\n"
            "    build_model('torchvision.models:resnet18', input_shape=(1, 32, 32), "
            "num_classes=10)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.count("repeated to 3") == 1


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\x00\xff\xfe\x9c" * 50, "not a UTF-8 text file"),
        (b"", "the file is empty"),
        (b"- just\n- a list\n", "expected a mapping"),
        (b"version: 1\nname: [unclosed\n", "not valid YAML"),
    ],
)
def test_bad_study_and_chain_files(tmp_path, capsys, content, fragment):
    path = tmp_path / "f.yaml"
    path.write_bytes(content)
    _fails_in_one_line("apply", str(path), fragment=fragment)  # a real process: no traceback
    for command in ("probe", "order", "tune", "baseline", "run", "report"):
        assert main([command, str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and fragment in err[0], (command, err)


def test_a_folder_is_not_a_study(tmp_path):
    _fails_in_one_line("baseline", str(tmp_path), fragment="is a folder")


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (b"\x00\x01\xff" * 40, "is not"),
        (b"def f(:\n", "is not valid Python (line 1"),
        (b"raise RuntimeError('boom')\n", "raised RuntimeError: boom"),
        (b"x = 1\n", "has no callable 'f'"),
        (b"def f(**kw):\n    raise ValueError('bad width')\n",
         "building it raised ValueError: bad width"),
    ],
)
def test_bad_model_files(tmp_path, content, fragment):
    path = tmp_path / "m.py"
    path.write_bytes(content)
    _fails_in_one_line("count", f"{path}:f", fragment=fragment)


def test_bad_model_file_for_load_model(tmp_path):
    path = tmp_path / "m.pt"
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(SeqsearchError, match="not a readable seqsearch model file"):
        load_model(path)


def test_imagefolder_with_a_broken_image(tmp_path):
    from PIL import Image

    for cls in ("a", "b"):
        (tmp_path / "data" / cls).mkdir(parents=True)
        for i in range(3):
            Image.new("RGB", (8, 8), (40 * i, 0, 0)).save(tmp_path / "data" / cls / f"{i}.png")
    (tmp_path / "data" / "b" / "9.png").write_bytes(b"\x89PNG but not really")
    study = tmp_path / "s.yaml"
    study.write_text(f"version: 1\nname: t\nmodel: {{name: tiny}}\n"
                     f"data: {{name: imagefolder, root: {tmp_path / 'data'}}}\n")
    _fails_in_one_line("baseline", str(study), fragment="9.png: not a readable image")


CHAIN = """\
version: 1
name: {name}
output: {out}
model: {{name: "{spec}"}}
data: {{name: digits, limit: 300}}
train: {{epochs: 1, stage_epochs: 1, student_epochs: 1, batch_size: 64}}
stages:
{stages}
"""
STEPS = {"D": "distill", "P": "prune", "Q": "quantize", "E": "early_exit"}
PARAMS = {"D": "{width: 0.5}", "P": "{ratio: 0.4}", "Q": "{weight_bits: 4, act_bits: 4}",
          "E": "{exits: 2, threshold: 0.0}"}


@pytest.mark.parametrize("order", ["DPQE", "EQPD"])
def test_grouped_dense_user_model_through_apply(tmp_path, order):
    """A user file model with a grouped 1x1 conv, dense concatenations and squeeze-excitation
    through `seqsearch apply`; run twice, the second run loads every prefix from the cache in a
    new process (the file's module name is stable across processes)."""
    chain = tmp_path / "chain.yaml"
    chain.write_text(CHAIN.format(
        name=f"gd{order}", out=tmp_path / "out", spec=f"{ZOO / 'grouped_dense.py'}:grouped_dense",
        stages="\n".join(f"  - {{stage: {STEPS[c]}, params: {PARAMS[c]}}}" for c in order)))
    # the ONNX export (torch.export: about 15 s here) once, for DPQE's first run
    onnx = [] if order == "DPQE" else ["--no-onnx"]
    first = json.loads(run_cli("apply", str(chain), "--json", *onnx).stdout)
    assert [s["letter"] for s in first["stages"]] == list(order)
    assert bool(first.get("onnx_file")) == (order == "DPQE")
    assert first["final"]["bitops_cr"] > 1.0
    bitops = [first["baseline"]["bitops"]] + [s["bitops"] for s in first["stages"]]
    assert all(b <= a * (1 + 1e-9) for a, b in zip(bitops, bitops[1:], strict=False))
    again = json.loads(run_cli("apply", str(chain), "--json", "--no-onnx").stdout)
    assert again["cached"] == len(order) and again["final"] == first["final"]
    # its classes live in the user's file: a fresh process must resolve the spec first
    code = f"from seqsearch.chain import load_model; load_model({first['model_file']!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "from a user model file" in proc.stderr
    resolve_factory(f"{ZOO / 'grouped_dense.py'}:grouped_dense")
    model = load_model(Path(first["model_file"]))
    model.train()
    outs = model(torch.zeros(4, 1, 8, 8))
    torch.stack([o.sum() for o in outs]).sum().backward()


def test_prune_exclude_keeps_a_layer_and_names_unknown_ones(stage_setup):
    import copy

    from seqsearch.stages.prune import prune_channels

    model, _, ctx, _ = stage_setup
    kept = copy.deepcopy(model)
    layer = next(n for n, m in kept.named_modules() if isinstance(m, torch.nn.Conv2d))
    width = kept.get_submodule(layer).out_channels
    pruned = prune_channels(kept, ctx, 0.5, exclude=[layer])
    assert pruned.get_submodule(layer).out_channels == width
    assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in kept.parameters())
    with pytest.raises(SeqsearchError, match="exclude names 'nope'"):
        prune_channels(copy.deepcopy(model), ctx, 0.5, exclude=["nope"])


def test_a_baseline_whose_loader_needs_module_versions_reloads(tmp_path):
    """torchvision's MNASNet refuses a state dict without its `_metadata` (module versions):
    the cached baseline keeps it, so a second command loads instead of failing."""
    study = tmp_path / "s.yaml"
    study.write_text(f"version: 1\nname: mn\noutput: {tmp_path / 'out'}\n"
                     "model: {name: 'torchvision.models:mnasnet0_5'}\n"
                     "data: {name: digits, limit: 120, image_size: 32}\n"
                     "train: {epochs: 1, batch_size: 32, precision: fp32}\n")
    first = json.loads(run_cli("baseline", str(study), "--json").stdout)
    again = json.loads(run_cli("baseline", str(study), "--json").stdout)
    assert not first["from_cache"] and again["from_cache"]
    assert again["val_accuracy"] == first["val_accuracy"]
