"""One explicit registry of model entry points and the one `create_model` factory.

A model spec is either a registry name (`resnet20`) or a user callable:
`"package.module:callable"` or `"path/to/file.py:callable"`. Keyword arguments go alongside.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import nn

from seqsearch.errors import SeqsearchError
from seqsearch.models import mobilenetv2, resnet_cifar, tiny, vgg

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory) -> None:
    """Add a model entry point; a name can be registered once only."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = factory


def list_models() -> list[str]:
    return sorted(_REGISTRY)


for _name, _factory in [
    ("tiny", tiny.tiny),
    ("resnet8", resnet_cifar.resnet8),
    ("resnet14", resnet_cifar.resnet14),
    ("resnet20", resnet_cifar.resnet20),
    ("resnet32", resnet_cifar.resnet32),
    ("resnet56", resnet_cifar.resnet56),
    ("resnet18", resnet_cifar.resnet18),
    ("resnet34", resnet_cifar.resnet34),
    ("vgg11", vgg.vgg11),
    ("vgg16", vgg.vgg16),
    ("vgg19", vgg.vgg19),
    ("mobilenetv2", mobilenetv2.mobilenetv2),
]:
    register_model(_name, _factory)


def _load_file_module(path: Path) -> Any:
    name = f"seqsearch_user_{abs(hash(str(path.resolve())))}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SeqsearchError(f"model spec: cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def resolve_factory(name: str) -> ModelFactory:
    """The callable behind a registry name or a `module:callable` / `file.py:callable` spec."""
    if name in _REGISTRY:
        return _REGISTRY[name]
    if ":" not in name:
        raise SeqsearchError(
            f"unknown model {name!r}: use one of {', '.join(list_models())} "
            "or a spec 'package.module:callable' / 'path/to/file.py:callable'"
        )
    target, _, attr = name.rpartition(":")
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise SeqsearchError(f"model spec {name!r}: file {target} does not exist")
        module = _load_file_module(path)
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as exc:
            raise SeqsearchError(
                f"model spec {name!r}: cannot import module {target!r} ({exc})"
            ) from None
    factory = getattr(module, attr, None)
    if factory is None or not callable(factory):
        raise SeqsearchError(f"model spec {name!r}: {target!r} has no callable {attr!r}")
    return factory


def create_model(
    name: str,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a model from a registry name or spec.

    `in_channels` and `num_classes` are passed when the factory names them (built-ins always
    do); `kwargs` go through as given (`width` for the width multiplier).
    """
    factory = resolve_factory(name)
    args = dict(kwargs or {})
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    # Passed only to factories that name them; a `**kwargs` factory gets them via `kwargs`.
    for key, value in (("in_channels", in_channels), ("num_classes", num_classes)):
        if key in params:
            args.setdefault(key, value)
    unknown = [k for k in args if k not in params and not takes_any]
    if params and unknown:
        raise SeqsearchError(
            f"model {name!r}: unknown argument(s) {', '.join(unknown)}; "
            f"it takes {', '.join(params)}"
        )
    model = factory(**args)
    if not isinstance(model, nn.Module):
        raise SeqsearchError(f"model spec {name!r} returned {type(model).__name__}, not a Module")
    return model
