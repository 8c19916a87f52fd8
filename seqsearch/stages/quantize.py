"""Q: quantization-aware training at chosen weight/activation bits, DoReFa (fixed activation
ranges) or LSQ (learned steps); `method` picks (quant_layers says how each quantizes).

First and last backbone layers get the study's first/last bits (default 8/8). Exit heads already
present are quantized too at the body bits and fine-tuned with the rest (the paper's EQ). A
quantized model can be quantized again (QQ re-sets the bits). Layers expose `weight_bits` and
`act_bits`, which the BitOps counter reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from optuna.distributions import CategoricalDistribution
from torch import nn

from seqsearch.stages.base import StageContext, StageInfo
from seqsearch.stages.common import (
    calibrate,
    counted_layers,
    first_last_layers,
    replace_module,
)
from seqsearch.stages.quant_layers import (
    ACT_BITS,
    METHODS,
    WEIGHT_BITS,
    no_decay_parameters,
    to_quant,
)
from seqsearch.train import fit


class Quantize:
    info = StageInfo(
        name="quantize",
        letter="Q",
        kind="static",
        granularity="sub-neuron",
        repeatable=True,
        space={
            "quantize.weight_bits": CategoricalDistribution(WEIGHT_BITS),
            "quantize.act_bits": CategoricalDistribution(ACT_BITS),
        },
        defaults={"quantize.weight_bits": 4, "quantize.act_bits": 8, "quantize.method": "dorefa"},
        description="QAT (DoReFa or LSQ); first/last layer bits from the study",
        choices={"quantize.method": METHODS},
    )

    @staticmethod
    def repeat_first(params: dict[str, Any]) -> dict[str, Any]:
        """QQ is compared with Q at the same final bits: the first Q goes to 8/8."""
        return {**params, "weight_bits": 8, "act_bits": 8}

    # `method` is a recipe, not a compression strength: outside the sampled space, set it with
    # probe.fixed / tune.fixed or in a chain file

    def apply(self, model: nn.Module, ctx: StageContext, params: Mapping[str, Any]) -> nn.Module:
        wb, ab = int(params["weight_bits"]), int(params["act_bits"])
        method = str(params.get("method", "dorefa"))
        before = ctx.teacher(model)
        first, last = first_last_layers(model, ctx.input_shape)
        fl_w, fl_a = ctx.first_last_bits
        for name, layer in list(counted_layers(model)):
            bits = (fl_w, fl_a) if name in (first, last) else (wb, ab)
            replace_module(model, name, to_quant(layer, *bits, method))
        calibrate(model, ctx.example_batch(256))  # the fit trains it all: batch statistics
        ctx.recalibrate_norms(model)
        fit(model, ctx.data, ctx.settings(finetune=True),
            no_decay=no_decay_parameters(model), loss_fn=ctx.recovery_loss(before),
            label=f"{ctx.label}quantize w{wb}a{ab}" + (" lsq" if method == "lsq" else ""),
            progress=ctx.progress)
        return model
