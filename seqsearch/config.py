"""Study config v1: YAML, versioned, strict.

Unknown keys and out-of-range values are errors that name the key and the file. The sections
`model`, `data` and `train` are shared with the chain files that `seqsearch apply` reads.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from seqsearch.errors import SeqsearchError
from seqsearch.precision import policy_settings, resolve_policy
from seqsearch.train import TrainSettings, resolve_device

CONFIG_VERSION = 1
DEFAULT_STAGES = ("distill", "prune", "quantize", "early_exit")


DEFAULT_BUDGETS = (0.2, 0.6, 1.0, 2.0)  # accuracy-drop budgets (points) verdicts look at
# points: the practical size of an order effect. One validation split of 1,800 images at 98 %
# has a standard error of 0.33 point (0.47 at 900), and the budgets users pick are 0.2-2 points:
# a gap under half a point is below what one split resolves and below a budget step, so two
# orders closer than that are "either order is fine".
DEFAULT_MIN_EFFECT = 0.5

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelSection(_Strict):
    name: str = Field(min_length=1)
    kwargs: dict[str, Any] = Field(default_factory=dict)
    # a state dict (torch.save of model.state_dict(), or a checkpoint holding one under
    # 'state_dict') the baseline starts from; train.epochs: 0 keeps it as it is
    weights: str | None = None

    def key_payload(self) -> dict[str, Any]:
        """What of the model decides the baseline: name, kwargs and, when given, the weights'
        file content (so a changed file is a new baseline)."""
        out = self.model_dump()
        if self.weights is None:
            del out["weights"]  # keys of studies from before this setting stay valid
        else:
            path = Path(self.weights)
            out["weights"] = hashlib.sha256(path.read_bytes()).hexdigest()[:16] \
                if path.is_file() else self.weights
        return out


class DataSection(_Strict):
    name: str = "digits"
    limit: int | None = Field(default=None, ge=20)
    # the test split's size: a stratified part of the official test split (or held out of
    # the pool instead of test_fraction); limit - test_limit are left for train and val
    test_limit: int | None = Field(default=None, ge=10)
    root: str | None = None
    download: bool = False
    val_fraction: float = Field(default=0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(default=0.2, gt=0.0, lt=0.5)
    image_size: int | None = Field(default=None, ge=4, le=1024)
    augment: Literal["none", "crop", "crop_flip"] = "none"

    @model_validator(mode="after")
    def _test_within_limit(self) -> DataSection:
        if self.test_limit is not None and self.limit is not None \
                and self.test_limit >= self.limit:
            raise ValueError(f"test_limit {self.test_limit} must be smaller than limit "
                             f"{self.limit} (limit counts train, val and test images)")
        return self


class TrainSection(_Strict):
    epochs: int = Field(default=10, ge=0, le=10_000)
    stage_epochs: int = Field(default=2, ge=0, le=10_000)
    student_epochs: int | None = Field(default=None, ge=0, le=10_000)
    lr: float = Field(default=0.1, gt=0.0, le=10.0)
    finetune_lr_factor: float = Field(default=0.1, gt=0.0, le=1.0)
    optimizer: Literal["sgd", "adam"] = "sgd"
    momentum: float = Field(default=0.9, ge=0.0, lt=1.0)
    weight_decay: float = Field(default=5e-4, ge=0.0, le=1.0)
    batch_size: int = Field(default=128, ge=1, le=65_536)
    schedule: Literal["cosine", "step", "constant"] = "cosine"
    # auto: bf16 autocast only where the hardware has it natively; channels-last where it
    # measured faster (seqsearch.precision). Evaluation is always fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    memory_format: Literal["auto", "channels_last", "contiguous"] = "auto"
    # every fine-tune after P, Q, L and E: cross-entropy alone, or plus KL to the model as it
    # was before the stage (docs/recovery.md says why that teacher), at this temperature
    recovery: Literal["ce", "kd"] = "ce"
    recovery_temperature: float = Field(default=1.0, gt=0.0, le=100.0)
    recovery_weight: float = Field(default=1.0, ge=0.0, le=100.0)
    # BatchNorm statistics re-estimated on this many training batches after a stage changes
    # the structure or the quantizers, before it fine-tunes (0: off)
    bn_recalibration: int = Field(default=0, ge=0, le=100_000)

    def settings(self, seed: int, *, finetune: bool = False) -> TrainSettings:
        """Baseline settings, or a stage's fine-tune settings (stage epochs, lr x factor)."""
        return TrainSettings(
            epochs=self.stage_epochs if finetune else self.epochs,
            lr=self.lr * (self.finetune_lr_factor if finetune else 1.0),
            optimizer=self.optimizer,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            batch_size=self.batch_size,
            schedule=self.schedule,
            seed=seed,
            precision=self.precision,
            memory_format=self.memory_format,
        )


class ProbeSection(_Strict):
    samples: int = Field(default=8, ge=1, le=10_000)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    # a pair gets its next seed, then more samples, only while undecided (search.stats)
    adaptive: bool = True
    # with adaptive: samples a contested pair may reach, added `sample_batch` at a time (None:
    # `samples` at a time); docs/commands.md says why 16
    max_samples: int | None = Field(default=16, ge=1, le=10_000)
    sample_batch: int | None = Field(default=None, ge=1, le=10_000)
    alpha: float = Field(default=0.1, gt=0.0, lt=1.0)
    statistic: Literal["gap", "hypervolume"] = "gap"
    min_effect: float = Field(default=DEFAULT_MIN_EFFECT, ge=0.0, le=100.0)  # points
    sampler_seed: int = 0
    tie_threshold: float = Field(default=0.05, ge=0.0, le=1.0)  # log BitOpsCR, budget wins
    max_drop: float | None = Field(default=None, gt=0.0, le=100.0)  # None: the largest budget
    budgets: list[float] = Field(default_factory=lambda: list(DEFAULT_BUDGETS), min_length=1)
    thresholds: list[float] = Field(
        default_factory=lambda: [0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.01], min_length=1)
    bootstrap: int = Field(default=200, ge=0, le=100_000)
    fixed: dict[str, Any] = Field(default_factory=dict)
    # the pairs to probe, as two stage letters each (e.g. [DE, PE, QE]); None: every pair.
    # The letters are checked against the enabled stages when the probe starts
    pairs: list[str] | None = Field(default=None, min_length=1)

    def most_samples(self) -> int:
        """The samples a pair may reach: `max_samples` with adaptive sampling, else `samples`."""
        return max(self.samples, self.max_samples or 0) if self.adaptive else self.samples

    def batch(self) -> int:
        return self.sample_batch or self.samples

    def sample_looks(self) -> list[int]:
        """The sample counts at which the added-sample looks happen (after the seed looks)."""
        counts, k = [], self.samples
        while k < self.most_samples():
            k = min(k + self.batch(), self.most_samples())
            counts.append(k)
        return counts

    def look_units(self) -> list[int]:
        """The units (parameter samples) a pair has at each planned look: `samples` at every
        seed look, then each added-sample look's count."""
        if not self.adaptive:
            return [self.samples]
        return [self.samples] * len(self.seeds) + self.sample_looks()

    def planned_looks(self) -> int:
        """Looks the sequential design may take (1 for a fixed design): every seed, then
        every batch of added samples. Each tests at alpha / planned looks."""
        return len(self.seeds) + len(self.sample_looks()) if self.adaptive else 1

    @field_validator("pairs")
    @classmethod
    def _pairs(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        seen: set[frozenset[str]] = set()
        for pair in v:
            if not isinstance(pair, str) or len(pair) != 2 or pair[0] == pair[1] \
                    or not pair.isalpha():
                raise ValueError(f"{pair!r} is not a pair of two different stage letters "
                                 "(e.g. DE)")
            key = frozenset(pair.upper())
            if key in seen:
                raise ValueError(f"{pair!r}: the pair is listed twice (in either order)")
            seen.add(key)
        return [p.upper() for p in v]

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v):
            raise ValueError("each seed may be listed once")
        return v


class TuneSection(_Strict):
    trials: int = Field(default=20, ge=1, le=100_000)
    budget: float = Field(default=1.0, ge=0.0, le=100.0)
    chains: list[str] | None = None
    # [true] tune every sub-chain of the candidate orders (each stage on or off); false: the
    # full orders only, every stage present (the paper tunes the whole chain)
    subchains: bool = True
    fixed: dict[str, Any] = Field(default_factory=dict)
    pruner: bool = True
    prune_slack: float = Field(default=1.0, ge=0.0, le=100.0)
    startup_trials: int = Field(default=5, ge=1, le=10_000)
    warm_start: int = Field(default=8, ge=0, le=10_000)  # measured points queued on top
    # candidates re-run on fresh seeds; None: 4 where the probe's points measured on two seeds
    # give σ_run 10 dof or more, else 8 (σ_run from these runs alone: with 4 the promise
    # at 0.9 held in 0.88 of synthetic studies, with 8 in 0.94; tests/test_bound.py)
    confirm: int | None = Field(default=None, ge=0, le=1_000)
    # the chance the exported chain's mean test drop is within the budget (search.bound)
    confidence: float = Field(default=0.9, ge=0.5, lt=1.0)
    # the validation drop trials are held to (None: the budget). The export's bound adds a
    # margin for noise, so trials at the budget's edge are mostly refused: aim at the budget
    # less that margin (`seqsearch export` prints it) to tune among chains it can accept
    aim: float | None = Field(default=None, ge=0.0, le=100.0)
    # what a trial maximises: log BitOpsCR (the paper's), the measured batch-1 speed-up of its
    # lowered ONNX on `runtime`, or both (a multi-objective study and its Pareto front)
    objective: Literal["bitops", "latency", "both"] = "bitops"
    runtime: Literal["onnxruntime", "openvino"] = "onnxruntime"

    def confirm_count(self, probed: bool) -> int:
        """The candidates the export re-runs: `confirm`, else 4 where the probe's repeated
        points price σ_run (`probed`), 8 where they do not."""
        return self.confirm if self.confirm is not None else (4 if probed else 8)


class RunSection(_Strict):
    """What decides a baseline and how stages train: shared by study and chain files."""

    version: Literal[1]
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    output: str | None = None
    seed: int = 0
    device: str = "auto"
    model: ModelSection
    data: DataSection = Field(default_factory=DataSection)
    train: TrainSection = Field(default_factory=TrainSection)
    first_last_bits: tuple[int, int] = (8, 8)

    @field_validator("first_last_bits")
    @classmethod
    def _bits(cls, v: tuple[int, int]) -> tuple[int, int]:
        for b in v:
            if b not in (1, 2, 4, 8, 16, 32):
                raise ValueError(f"bits must be one of 1, 2, 4, 8, 16, 32, not {b}")
        return v

    def output_dir(self) -> Path:
        return Path(self.output) if self.output else Path("runs") / self.name

    def resolved_policy(self) -> dict[str, str]:
        """What `train.precision` and `train.memory_format` mean on this study's device."""
        return policy_settings(resolve_policy(self.train.precision, self.train.memory_format,
                                              resolve_device(self.device)))

    def baseline_key(self, policy: Mapping[str, Any] | None = None) -> str:
        """Hash of everything that decides the baseline: model, data, baseline training, seed,
        and the precision policy it trains under *as resolved* (default: on this machine; or
        the `policy` a study recorded). `auto` means bf16 on a CPU with AMX and fp32 on one
        without, so a study moved between the two kinds trains a new baseline instead of
        silently reusing one trained under the other policy."""
        train = dict(self.train.settings(self.seed).__dict__)
        resolved = self.resolved_policy() if policy is None else policy
        for key in ("precision", "memory_format"):
            train[key] = str(resolved[key])
        data = self.data.model_dump()
        if data["test_limit"] is None:  # keys from before this setting stay valid
            del data["test_limit"]
        payload = {
            "model": self.model.key_payload(),
            "data": data,
            "train": train,
        }
        blob = json.dumps(payload, sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


class StudyConfig(RunSection):
    stages: list[str] = Field(default_factory=lambda: list(DEFAULT_STAGES), min_length=1)
    probe: ProbeSection = Field(default_factory=ProbeSection)
    tune: TuneSection = Field(default_factory=TuneSection)
    # a stage's search space narrowed for this study (search.space): `stage.param: [choices]`
    # or `stage.param: {low: .., high: ..}`; the probe's samples and tuning draw from it
    space: dict[str, Any] = Field(default_factory=dict)

    @field_validator("stages")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("each stage may be listed once")
        return v

    def probe_fixed(self) -> dict[str, Any]:
        """The params the probe fixes: tuning's (`tune.fixed`), so the verdicts are about the
        methods the export uses, with `probe.fixed` on top where the study says otherwise (a
        paper replication). Keys of stages the study does not enable are left out."""
        enabled = set(self.stages)
        own = {k: v for k, v in self.tune.fixed.items() if k.split(".", 1)[0] in enabled}
        return {**own, **self.probe.fixed}

    def tune_fixed(self) -> dict[str, Any]:
        """The params tuning fixes: `probe.fixed`, with `tune.fixed` on top."""
        return {**self.probe.fixed, **self.tune.fixed}


class StepSection(_Strict):
    stage: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)


class PolicySection(_Strict):
    """A resolved training policy, pinned in an exported chain."""

    precision: Literal["fp32", "bf16", "fp16"]
    memory_format: Literal["channels_last", "contiguous"]
    # torch threads the models trained with: one count for the baseline and every stage, or
    # a list (the baseline's, then each stage's); sums split over threads round differently
    threads: int | list[int] | None = None
    recorded_from: str | None = None

    @field_validator("threads")
    @classmethod
    def _threads(cls, v: int | list[int] | None) -> int | list[int] | None:
        counts = [v] if isinstance(v, int) else (v or [])
        if any(c < 1 for c in counts) or (isinstance(v, list) and not v):
            raise ValueError("threads must be a count of at least 1, or a list of such counts "
                             "(the baseline's, then each stage's)")
        return v


class ChainConfig(RunSection):
    """A chain file for `seqsearch apply`: the run settings plus an ordered list of stages.

    `name` defaults to the file's stem; `metrics` is what an exported chain reached (kept for
    comparison, never read as input).
    """

    stages: list[StepSection] = Field(default_factory=list)
    metrics: dict[str, Any] | None = None
    versions: dict[str, str] | None = None
    feasible: bool | None = None  # an export: whether it met the budget (never read as input)
    source: dict[str, Any] | None = None  # an export: probe, brute or tune, and which point
    confirmation: dict[str, Any] | None = None  # an export: every seed's figures and their means
    real_cost: dict[str, Any] | None = None  # bench-model: measured latency and size (not input)
    # an export: the precision, memory format and threads its figures ran under (apply's
    # default)
    policy: PolicySection | None = None

    @model_validator(mode="after")
    def _threads_per_stage(self) -> ChainConfig:
        threads = self.policy.threads if self.policy is not None else None
        if isinstance(threads, list) and len(threads) != len(self.stages) + 1:
            raise ValueError(f"policy.threads lists {len(threads)} counts; a list needs one for "
                             f"the baseline and one per stage ({len(self.stages) + 1}), or give "
                             "one count for all")
        return self


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line naming the key (dotted path) and what is wrong, for the first error."""
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"{source}: unknown key {key!r}"
    if first["type"] == "missing":
        return f"{source}: missing key {key!r}"
    value = first.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    return f"{source}: {key}: {first['msg']}{shown}"


def read_text_file(path: Path, what: str) -> str:
    """A file's UTF-8 text, or a `SeqsearchError` that names the file and what was expected."""
    if path.is_dir():
        raise SeqsearchError(f"{path}: is a folder; expected {what}")
    if not path.is_file():
        raise SeqsearchError(f"{path}: no such file")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise SeqsearchError(f"{path}: not a UTF-8 text file (byte {exc.start}); expected {what}"
                             ) from None
    except OSError as exc:
        raise SeqsearchError(f"{path}: cannot be read ({exc.strerror}); expected {what}") from None


def read_yaml(path: Path) -> dict[str, Any]:
    text = read_text_file(path, "a YAML study or chain file")
    if not text.strip():
        raise SeqsearchError(f"{path}: the file is empty; expected a YAML mapping with 'version: "
                             f"{CONFIG_VERSION}' and the study's keys")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise SeqsearchError(f"{path}: not valid YAML{line}") from None
    if not isinstance(raw, dict):
        raise SeqsearchError(f"{path}: expected a mapping of keys at the top level")
    return raw


def check_version(raw: dict[str, Any], source: str) -> None:
    version = raw.get("version")
    if version is None:
        raise SeqsearchError(f"{source}: missing key 'version' (this seqsearch reads version "
                             f"{CONFIG_VERSION})")
    if version != CONFIG_VERSION:
        raise SeqsearchError(f"{source}: version {version!r} is not supported; this seqsearch "
                             f"reads version {CONFIG_VERSION}")


def parse_study(raw: dict[str, Any], source: str = "study") -> StudyConfig:
    check_version(raw, source)
    try:
        return StudyConfig.model_validate(raw)
    except ValidationError as err:
        raise SeqsearchError(format_validation_error(err, source)) from None


def load_chain(path: str | Path) -> ChainConfig:
    """Load and validate a chain file (stage names and params are checked by the chain module)."""
    p = Path(path)
    raw = read_yaml(p)
    check_version(raw, str(p))
    raw.setdefault("name", p.stem)
    try:
        return ChainConfig.model_validate(raw)
    except ValidationError as err:
        raise SeqsearchError(format_validation_error(err, str(p))) from None


def quickstart_path() -> Path:
    return Path(str(resources.files("seqsearch") / "studies" / "quickstart.yaml"))


def load_study(path: str | Path | None = None) -> StudyConfig:
    """Load and validate a study file; with no path, the embedded quickstart."""
    p = Path(path) if path is not None else quickstart_path()
    return parse_study(read_yaml(p), str(p))
