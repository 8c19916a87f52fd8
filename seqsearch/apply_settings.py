"""What `seqsearch apply` runs a chain file under: its policy, its work folder, its model path.

An exported chain pins the precision, memory format and torch thread counts its figures were
measured under (`policy:`); apply reproduces under that policy unless told otherwise
(`--precision`, `--threads`), and
says in one line when this machine cannot (fp16 without a GPU) or only emulates it (bf16 on a
CPU without native bf16: slower, the same numerics). Apply never writes into the study folder
the chain came from: an exported chain names its study folder as `output` (relative to the
folder the study ran from, e.g. `reports/resnet20-mnist5k`), and rebuilding it there would add
a baseline, caches and environment records to the committed study. So a chain file inside its
own `output` folder (chain.yaml, tune/best_chain.yaml), or an exported chain (one with
`metrics`) whose `output` is relative, works in `runs/NAME` and saves `runs/NAME/model.pt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from seqsearch.config import ChainConfig
from seqsearch.precision import native_bf16, policy_settings, resolve_policy
from seqsearch.train import resolve_device


@dataclass(frozen=True)
class ApplySettings:
    cfg: ChainConfig
    work_dir: Path
    model_path: Path
    notes: list[str]
    # the precision and memory format this machine trains the chain under (what `auto` and
    # the pinned policy resolve to here), as `policy_settings` writes them
    policy: dict[str, str]
    # torch threads for the baseline's training and each stage's (None: this process's own)
    baseline_threads: int | None = None
    stage_threads: list[int] | None = None


def _inside(path: Path, folder: Path) -> bool:
    return path.resolve().is_relative_to(folder.resolve())


def chain_threads(cfg: ChainConfig) -> tuple[int | None, list[int] | None]:
    """The threads the chain's baseline and stages trained with: a float's sums depend on how
    a kernel splits them over threads, so the same seed trains a different model at 1 and 2
    threads. One count for all, or the baseline's then each stage's."""
    threads = cfg.policy.threads if cfg.policy is not None else None
    if threads is None:
        return None, None
    if isinstance(threads, int):
        return threads, [threads] * len(cfg.stages)
    return threads[0], list(threads[1:])


def apply_settings(cfg: ChainConfig, chain_path: Path, *, out: str | None = None,
                   precision: str | None = None, threads: int | None = None) -> ApplySettings:
    notes: list[str] = []
    wanted = precision
    memory_format = cfg.train.memory_format
    if wanted is None and cfg.policy is not None:
        wanted, memory_format = cfg.policy.precision, cfg.policy.memory_format
        notes.append(f"[apply] policy {wanted}, {memory_format.replace('_', '-')}: as the "
                     "chain was measured (its 'policy'); --precision overrides")
    device = resolve_device(cfg.device)
    if wanted == "fp16" and device.type != "cuda":
        notes.append(f"[apply] the chain ran under fp16, which needs a CUDA GPU; {device} "
                     "has none, so this run uses fp32 (figures may differ slightly)")
        wanted = "fp32"
    elif wanted == "bf16" and not native_bf16(device):
        notes.append(f"[apply] the chain ran under bf16, which {device} only emulates: the "
                     "same numerics, slower")
    # The baseline's cache key hashes the policy as resolved, so writing it out explicitly
    # finds the same baseline as the chain's own `auto` did where it meant the same.
    if wanted is not None:
        train = cfg.train.model_copy(update={"precision": wanted,
                                             "memory_format": memory_format})
        cfg = cfg.model_copy(update={"train": train})
    base_threads, stage_threads = chain_threads(cfg)
    if base_threads is not None and threads is not None:
        notes.append(f"[apply] torch threads {threads} (--threads), not the chain's "
                     f"{cfg.policy.threads if cfg.policy else base_threads}: figures may differ")
        base_threads = stage_threads = None
    elif base_threads is not None:
        shown = cfg.policy.threads if cfg.policy is not None else base_threads
        notes.append(f"[apply] torch threads {shown}: as the chain's models were trained "
                     "(its 'policy'), so the rebuild is bit for bit")
    work = cfg.output_dir()
    exported = cfg.metrics is not None and cfg.output is not None \
        and not Path(cfg.output).is_absolute()
    if _inside(chain_path, work) or exported:
        work = Path("runs") / cfg.name
        notes.append(f"[apply] working in {work} (the study folder {cfg.output_dir()} the "
                     "chain was exported from is left as it is)")
        model_path = Path(out) if out else work / "model.pt"
    else:
        model_path = Path(out) if out else chain_path.with_suffix(".pt")
    cfg = cfg.model_copy(update={"output": str(work)})
    resolved = policy_settings(resolve_policy(cfg.train.precision, cfg.train.memory_format,
                                              device))
    return ApplySettings(cfg, work, model_path, notes, resolved, base_threads, stage_threads)
