from __future__ import annotations

import json
import subprocess
import sys

import pytest
from helpers import run_cli

from seqsearch.cli import main


def test_count_json_is_one_object(capsys):
    assert main(["count", "resnet20", "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    row = json.loads(out[0])
    assert (row["macs"], row["params"], row["bitops"]) == (40_813_184, 272_474, 41_792_700_416)


def test_count_text_and_options(capsys):
    assert main(["count", "tiny", "--input-shape", "1,8,8", "--num-classes", "3",
                 "--kwargs", '{"width": 2}']) == 0
    out = capsys.readouterr().out
    assert "MACs" in out and "BitOps" in out


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["count", "nonet"], "unknown model 'nonet'"),
        (["count", "nopkg.x:f"], "cannot import module 'nopkg.x'"),
        (["count", "torchvision.models:nonet"], "no callable 'nonet'"),
        (["count", "vgg16", "--input-shape", "3,8,8"], "cannot take input shape 3,8,8"),
        (["count", "tiny", "--input-shape", "3x32"], "--input-shape"),
        (["baseline", "nope.yaml"], "nope.yaml: no such file"),
    ],
)
def test_bad_input_one_line_exit_2(argv, fragment):
    proc = subprocess.run([sys.executable, "-m", "seqsearch", *argv], capture_output=True,
                          text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0]
    assert "Traceback" not in proc.stderr


def test_baseline_trains_then_loads_from_cache(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(
        "version: 1\nname: t\nmodel: {name: tiny}\n"
        "data: {name: digits, limit: 200}\ntrain: {epochs: 1, batch_size: 32}\n"
    )
    out_dir = tmp_path / "out"
    assert main(["baseline", str(study), "--out", str(out_dir), "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    assert first["from_cache"] is False and 0.0 <= first["test_accuracy"] <= 1.0
    assert list((out_dir / "baseline").glob("*.pt"))
    assert main(["baseline", str(study), "--out", str(out_dir), "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["from_cache"] is True
    assert second["test_accuracy"] == first["test_accuracy"]


def test_baseline_missing_data_folder(tmp_path):
    study = tmp_path / "s.yaml"
    study.write_text(
        f"version: 1\nname: t\nmodel: {{name: tiny}}\n"
        f"data: {{name: cifar10, root: {tmp_path / 'none'}}}\n"
    )
    proc = subprocess.run([sys.executable, "-m", "seqsearch", "baseline", str(study)],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "download" in proc.stderr and "Traceback" not in proc.stderr


# lr 10 with weight decay 1 multiplies the weights by about -9 a step: NaN within two epochs
WILD = "batch_size: 8, lr: 10.0, weight_decay: 1.0, schedule: constant, precision: fp32"


@pytest.mark.parametrize(
    "command, train, fragment",
    [
        ("apply", f"epochs: 0, stage_epochs: 6, finetune_lr_factor: 1.0, {WILD}",
         "training diverged on tiny: Q: quantize w4a8: loss is nan"),
        ("probe", f"epochs: 6, {WILD}", "training diverged on tiny: baseline: loss is nan"),
    ],
)
def test_divergence_is_one_line_exit_2(tmp_path, command, train, fragment):
    """A fit whose loss turns NaN ends the command with one line naming the stage, the model
    and what to try, as any user error does (a search's trials still fail alone)."""
    path = tmp_path / "c.yaml"
    path.write_text(f"version: 1\nname: c\nmodel: {{name: tiny}}\n"
                    f"data: {{name: digits, limit: 200}}\ntrain: {{{train}}}\n"
                    f"output: {tmp_path / 'run'}\nstages: [{{stage: quantize}}]\n")
    if command == "probe":
        path.write_text(path.read_text().replace("stages: [{stage: quantize}]\n", ""))
    proc = run_cli(command, str(path), check=False)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0] and "try a lower train.lr" in lines[0]
    assert "Traceback" not in proc.stderr


def test_bench_lists_every_benchmark_and_the_old_entry_points_work():
    listed = run_cli("bench", "--help").stdout
    for name in ("loop", "command", "qat", "cache", "tune", "recovery", "model"):
        assert f"    {name} " in listed, name
    assert "SUPPRESS" not in listed
    assert "--runs" in run_cli("bench-model", "--help").stdout  # kept as it was
    assert "--runs" in run_cli("bench", "model", "--help").stdout  # the same command
    assert "--epochs" in run_cli("bench", "recovery", "--help").stdout
    proc = subprocess.run([sys.executable, "-m", "seqsearch.bench", "qat", "--help"],
                          capture_output=True, text=True)
    assert proc.returncode == 0 and "--bits" in proc.stdout
