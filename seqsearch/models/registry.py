"""One explicit registry of model entry points and the one `create_model` factory.

A model spec is either a registry name (`resnet20`) or a user callable:
`"package.module:callable"` or `"path/to/file.py:callable"`. Keyword arguments go alongside.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from seqsearch.errors import SeqsearchError, first_line
from seqsearch.models import mobilenetv2, resnet_cifar, tiny, vgg
from seqsearch.progress import note

ModelFactory = Callable[..., nn.Module]

_REGISTRY: dict[str, ModelFactory] = {}


def register_model(name: str, factory: ModelFactory) -> None:
    """Add a model entry point; a name can be registered once only."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    _REGISTRY[name] = factory


def register_object(model: nn.Module | ModelFactory, name: str | None = None) -> str:
    """A model object or factory of the Python API as a registry name a study can use.

    An object is copied for every build (its own weights are where the baseline starts); a
    factory is called with the data's `in_channels` and `num_classes` where it takes them. The
    name is `name`, else the class or function name, plus a digest of the module's structure
    and weights (an object) or of its qualified name (a factory): the same model gives the same
    name, hence the same baseline cache key, in every process."""
    import copy

    if isinstance(model, nn.Module):
        digest = hashlib.sha256(repr(model).encode())
        for key, t in model.state_dict().items():
            c = t.detach().cpu().contiguous()
            digest.update(f"{key}{c.dtype}{tuple(c.shape)}".encode())
            digest.update(c.numpy().tobytes() if c.dtype != torch.bfloat16 else
                          c.float().numpy().tobytes())
        label = name or type(model).__name__
        obj = model

        def factory(**_: Any) -> nn.Module:
            return copy.deepcopy(obj)
    elif callable(model):
        qual = f"{getattr(model, '__module__', '')}.{getattr(model, '__qualname__', model)}"
        digest = hashlib.sha256(qual.encode())
        code = getattr(model, "__code__", None)  # two lambdas of one module differ here
        if code is not None:
            digest.update(code.co_code + repr(code.co_consts).encode())
        label = name or str(getattr(model, "__name__", "factory"))
        factory = model
    else:
        raise SeqsearchError(f"model: expected an nn.Module or a callable that returns one, "
                             f"not {type(model).__name__}")
    key = f"{label}-{digest.hexdigest()[:12]}"
    if key not in _REGISTRY:
        _REGISTRY[key] = factory
    return key


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
    # A stable name (not `hash()`, which is salted per process): a model saved whole by one
    # process pickles its classes under this module name, and another process must find it.
    digest = hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]
    name = f"seqsearch_user_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SeqsearchError(f"model spec: cannot load {path} as a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        del sys.modules[name]
        where = f"line {exc.lineno}: " if exc.lineno else ""
        raise SeqsearchError(f"model spec: {path} is not valid Python ({where}{exc.msg})"
                             ) from None
    except (UnicodeDecodeError, ValueError) as exc:
        del sys.modules[name]
        raise SeqsearchError(f"model spec: {path} is not a Python text file "
                             f"({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - the user's module failed while importing
        del sys.modules[name]
        raise SeqsearchError(f"model spec: importing {path} raised {type(exc).__name__}: "
                             f"{str(exc)[:200]}") from None
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
            raise SeqsearchError(f"model spec {name!r}: file {target} does not exist"
                             + (" (it is a folder)" if path.is_dir() else ""))
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


def _call_factory(name: str, factory: ModelFactory, args: dict[str, Any],
                  optional: Mapping[str, Any]) -> Any:
    """Call with `args` plus the `optional` ones it accepts; a `**kwargs` factory (torchvision's
    builders) is tried with all of them, then without each one its class rejects."""
    extra = dict(optional)
    while True:
        try:
            return factory(**{**extra, **args})
        except TypeError as exc:
            rejected = [k for k in extra if repr(k) in str(exc) or f"'{k}'" in str(exc)]
            if not rejected:
                raise SeqsearchError(f"model {name!r}: {exc}") from None
            for k in rejected:
                del extra[k]
        except SeqsearchError:
            raise
        except Exception as exc:  # noqa: BLE001 - the user's factory failed: one line, no trace
            first = first_line(exc)
            raise SeqsearchError(f"model {name!r}: building it raised {type(exc).__name__}: "
                                 f"{first}") from None


def create_model(
    name: str,
    *,
    in_channels: int = 3,
    num_classes: int = 10,
    kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """Build a model from a registry name or spec.

    `in_channels` and `num_classes` reach every factory that names them or takes `**kwargs`
    (torchvision's builders take `num_classes` that way and reject `in_channels`, which is then
    dropped); `kwargs` go through as given (`width` for the width multiplier).
    """
    factory = resolve_factory(name)
    args = dict(kwargs or {})
    params: Mapping[str, inspect.Parameter]
    try:
        params = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        params = {}
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    unknown = [k for k in args if k not in params and not takes_any]
    if params and unknown:
        raise SeqsearchError(
            f"model {name!r}: unknown argument(s) {', '.join(unknown)}; "
            f"it takes {', '.join(params)}"
        )
    optional = {key: value for key, value in
                (("in_channels", in_channels), ("num_classes", num_classes))
                if key not in args and (key in params or takes_any)}
    model = _call_factory(name, factory, args, optional)
    if not isinstance(model, nn.Module):
        raise SeqsearchError(f"model spec {name!r} returned {type(model).__name__}, not a Module")
    return model


def repeat_grayscale(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """Forward pre-hook: a 1-channel batch repeated to the 3 channels the first layer wants.

    A module-level function, so a model saved whole (pickled) keeps it."""
    x = args[0]
    return (x.expand(-1, 3, *x.shape[2:]), *args[1:])


_SAID_GRAY: set[str] = set()


def _first_layer_channels(model: nn.Module) -> tuple[str, int] | None:
    for layer_name, m in model.named_modules():
        if isinstance(m, nn.Conv2d):
            return layer_name, m.in_channels
        if isinstance(m, nn.Linear):
            return None  # an MLP-style front: the forward check below judges it
    return None


def build_model(
    name: str,
    *,
    input_shape: tuple[int, int, int],
    num_classes: int,
    kwargs: Mapping[str, Any] | None = None,
) -> nn.Module:
    """`create_model` for a dataset: the input and output widths checked by a real forward.

    A model whose first conv wants 3 channels on 1-channel data gets the grayscale repeated
    (said once); any other mismatch, or an output that is not `num_classes` wide, is a
    `SeqsearchError` naming the spec and both widths.
    """
    c = input_shape[0]
    model = create_model(name, in_channels=c, num_classes=num_classes, kwargs=kwargs)
    first = _first_layer_channels(model)
    if first is not None and first[1] != c:
        if c == 1 and first[1] == 3:
            model.register_forward_pre_hook(repeat_grayscale)
            if name not in _SAID_GRAY:  # once per model spec and process
                _SAID_GRAY.add(name)
                note(f"[model] {name}: its first layer {first[0]!r} wants 3 channels; "
                     "the 1-channel images are repeated to 3")
        else:
            raise SeqsearchError(
                f"model {name!r}: its first layer {first[0]!r} wants {first[1]} input channels, "
                f"the data has {c}; pass in_channels in model.kwargs or use matching data")
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.zeros(2, *input_shape))
    except Exception as exc:  # noqa: BLE001 - any failure here is the model not fitting the data
        raise SeqsearchError(
            f"model {name!r} cannot take input shape {','.join(map(str, input_shape))}: "
            f"{type(exc).__name__}: {first_line(exc)}"
        ) from None
    finally:
        model.train(was_training)
    logits = out[-1] if isinstance(out, list | tuple) else out
    is_logits = isinstance(logits, torch.Tensor) and logits.dim() == 2
    width = int(logits.shape[-1]) if is_logits else None
    if width != num_classes:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise SeqsearchError(
            f"model {name!r}: expected {num_classes} class logits (the data's classes), got output "
            f"of shape {shape}; pass num_classes in model.kwargs or fix the factory")
    return model
