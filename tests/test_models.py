from __future__ import annotations

import pytest
import torch

from seqsearch.errors import SeqsearchError
from seqsearch.metrics import count_macs, count_params
from seqsearch.models import create_model, exit_points_of, list_models

# REFERENCE.md oracle: conv+linear MACs and params at 3x32x32, 10 classes.
REFERENCE = {
    "resnet20": (272_474, 40_813_184),
    "resnet32": (466_906, 69_124_736),
    "resnet56": (855_770, 125_747_840),
    "resnet18": (11_173_962, 555_422_720),
    "resnet34": (21_282_122, 1_159_402_496),
    "vgg19": (20_040_522, 398_136_320),
    "vgg16": (14_728_266, 313_201_664),
    "mobilenetv2": (2_296_922, 91_154_944),
}


def test_registry_names():
    expected = {"tiny", "resnet8", "resnet14", "resnet20", "resnet32", "resnet56", "resnet18",
                "resnet34", "vgg11", "vgg16", "vgg19", "mobilenetv2"}
    assert expected <= set(list_models())


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_table(name):
    params, macs = REFERENCE[name]
    model = create_model(name)
    assert count_params(model) == params
    assert count_macs(model, (3, 32, 32)) == macs


@pytest.mark.parametrize("name", sorted(set(list_models())))
def test_every_model_contract(name):
    """Shape, finite output, a gradient for every parameter, declared exit points exist."""
    model = create_model(name, in_channels=1, num_classes=7, kwargs={"width": 0.25})
    x = torch.randn(2, 1, 32, 32)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    points = exit_points_of(model)
    assert points, "every built-in declares exit points"
    modules = dict(model.named_modules())
    assert all(p in modules for p in points)


def test_width_multiplier_shrinks():
    assert count_params(create_model("resnet20", kwargs={"width": 0.5})) < 272_474 / 3


def test_module_spec_and_kwargs():
    model = create_model("torchvision.models:resnet18", kwargs={"num_classes": 5})
    assert model.eval()(torch.randn(1, 3, 32, 32)).shape == (1, 5)


def test_file_spec(tmp_path):
    src = tmp_path / "mynet.py"
    src.write_text(
        "import torch.nn as nn\n"
        "def build(in_channels=3, num_classes=10, hidden=4):\n"
        "    return nn.Sequential(nn.Conv2d(in_channels, hidden, 3), nn.Flatten(),\n"
        "                         nn.LazyLinear(num_classes))\n"
    )
    model = create_model(f"{src}:build", in_channels=1, num_classes=3, kwargs={"hidden": 2})
    assert model(torch.randn(1, 1, 8, 8)).shape == (1, 3)


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("resnet99", "unknown model 'resnet99'"),
        ("no_such_pkg.mod:f", "cannot import module 'no_such_pkg.mod'"),
        ("torchvision.models:no_such_net", "has no callable 'no_such_net'"),
        ("missing/file.py:f", "file missing/file.py does not exist"),
    ],
)
def test_bad_specs(spec, fragment):
    with pytest.raises(SeqsearchError, match=fragment):
        create_model(spec)


def test_unknown_kwarg():
    with pytest.raises(SeqsearchError, match="unknown argument"):
        create_model("resnet20", kwargs={"depth": 3})
