"""The experiment spec: a TOML file parsed field by field into frozen dataclasses.

Every user mistake (missing file, bad TOML, unknown field, wrong type, value out
of range) raises :class:`SpecError` with one sentence naming the field and value.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import SpecError
from .registry import is_import_path

SAMPLERS = ("fixed", "bernoulli")
INITS = ("per_model", "shared")
PRECISIONS = ("auto", "fp32", "bf16")  # trainer.precision; see train/precision.py
LR_SCHEDULES = ("constant", "triangle")
NORMALIZATIONS = ("none", "standardize")


@dataclass(frozen=True)
class Experiment:
    name: str = "experiment"
    seed: int = 0
    n_models: int = 1000
    alpha: float = 0.5
    sampler: str = "fixed"  # "fixed": exactly round(alpha * n) examples; "bernoulli": each with prob alpha
    block_size: int = 250  # model indices per job (one worker call trains one block)

    def validate(self) -> None:
        _check(0.0 < self.alpha < 1.0, "experiment.alpha", self.alpha, "must lie strictly between 0 and 1")
        _check(self.n_models >= 1, "experiment.n_models", self.n_models, "must be at least 1")
        _check(self.block_size >= 1, "experiment.block_size", self.block_size, "must be at least 1")
        _check(self.sampler in SAMPLERS, "experiment.sampler", self.sampler, f"must be one of {SAMPLERS}")
        _check(self.seed >= 0, "experiment.seed", self.seed, "must be non-negative")


@dataclass(frozen=True)
class Data:
    # a built-in ("digits", "cifar10", "arrays": .npz files, "folder": class-subfolder
    # images) or your own "package.module:Class" (see datamodels.data.base.Dataset)
    dataset: str = "digits"
    # size of the training pool; 0: the dataset's own (digits 1,300, CIFAR-10 50,000,
    # files: every example of data.pool); the rest of a built-in dataset becomes its targets
    n_train: int = 0
    split_seed: int = 0
    root: str = ""  # local folder with the raw dataset (cifar10: the python-pickle archive)
    # file datasets: the pool's file (.npz) or folder, and one per target set; relative
    # paths are taken from the spec file's folder
    pool: str = ""
    targets: dict[str, str] = field(default_factory=dict, hash=False)
    # "none", or "standardize": centred and scaled with the pool's mean and std (per
    # feature, or per channel of images), the same statistics for every target set
    normalize: str = "none"
    image_size: tuple[int, ...] = ()  # folder: every image is resized to [H, W]
    channels: int = 3  # folder: 1 (grayscale) or 3 (RGB)

    def validate(self) -> None:
        from .data.base import DATASETS

        _wrap(DATASETS.check, self.dataset)
        _check(self.n_train == 0 or self.n_train >= 2, "data.n_train", self.n_train,
               "must be 0 (the dataset's own pool) or at least 2")
        _check(self.normalize in NORMALIZATIONS, "data.normalize", self.normalize, f"must be one of {NORMALIZATIONS}")
        _check(self.channels in (1, 3), "data.channels", self.channels, "must be 1 (grayscale) or 3 (RGB)")
        _check(len(self.image_size) in (0, 2) and all(s >= 1 for s in self.image_size), "data.image_size",
               list(self.image_size), "must be [H, W] with positive sizes")
        for name in self.targets:
            _check(name != "train" and name.strip() != "" and name == name.strip(), "data.targets", name,
                   "must name a target set other than 'train' (the pool itself), without surrounding spaces")

    def with_paths_from(self, base: Path) -> "Data":
        """A copy with relative data.pool / data.targets taken from folder `base` (made absolute)."""
        def absolute(p: str) -> str:
            return p if not p or Path(p).expanduser().is_absolute() else str((base / p).resolve())

        return dataclasses.replace(self, pool=absolute(self.pool),
                                   targets={k: absolute(v) for k, v in self.targets.items()})

    def target_sets(self) -> tuple[str, ...] | None:
        """The target sets a built-in dataset offers besides "train" (None: known only when it is built)."""
        from .data.base import DATASETS

        if DATASETS.is_builtin(self.dataset):
            return DATASETS.load(self.dataset)(self).target_sets()
        return None


@dataclass(frozen=True)
class Model:
    # a built-in ("linear", "mlp", "cnn", "resnet9") or your own "package.module:function",
    # called as function(in_shape, n_classes, model) -> torch.nn.Module (datamodels.train.modules)
    name: str = "mlp"
    hidden: tuple[int, ...] = (64, 64)  # MLP widths
    width: int = 16  # CNN channels

    def validate(self) -> None:
        from .train.base import MODELS

        _wrap(MODELS.check, self.name)  # the name's syntax only: nothing is imported
        _check(all(h >= 1 for h in self.hidden), "model.hidden", list(self.hidden), "must hold positive widths")
        _check(self.width >= 1, "model.width", self.width, "must be at least 1")


@dataclass(frozen=True)
class Trainer:
    # a built-in ("batched", "ffcv", "reference", "python", "command") or your own
    # "package.module:trainer" (the protocol of datamodels.train.base)
    kind: str = "batched"
    epochs: int = 20
    batch_size: int = 32
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    models_per_batch: int = 250  # models trained at once by the batched trainer
    threads: int = 1  # torch threads per worker process
    device: str = "cpu"
    # "constant", or "triangle": lr rises linearly from 0 to `lr` at
    # lr_peak_epoch, then falls linearly to 0 at the last step (the one-cycle
    # shape of the fast CIFAR-10 recipes)
    lr_schedule: str = "constant"
    lr_peak_epoch: float = 2.0
    nesterov: bool = False
    # "per_model": every model draws its own init (the datamodels paper);
    # "shared": all models start from one init drawn from the experiment seed,
    # so margins vary with the training subset and data order alone. Measured
    # on digits (MLP, 10 epochs): run-to-run Spearman of margins on the same
    # subset 0.46 per_model, 0.82 shared.
    init: str = "per_model"
    # Matmul precision of the batched trainer's linear and MLP models: "fp32",
    # "bf16" (bfloat16 matmul inputs, fp32 accumulation, float32 master weights,
    # momentum buffers, softmax and target margins; see batched.py), or "auto":
    # bf16 where the device runs it natively (AVX512-BF16 / AMX CPUs, CUDA),
    # fp32 elsewhere, where emulated bf16 is many times slower (train/precision.py).
    precision: str = "fp32"  # the default of runs made before "auto"; the shipped jobs/ say "auto"
    # Your own training code (datamodels.train.python, datamodels.train.command):
    # kind "python": function = "package.module:function", called per block as
    # function(spec, data, indices, masks, outputs) -> {"margins": float32[B, k]},
    # or with per_model = true as function(spec, data, index, mask, outputs) -> {"margins": float32[k]};
    # kind "command": a template run once per model, e.g.
    # "{python} train.py --index {index} --seed {seed} --mask {mask} --out {out}",
    # killed after timeout seconds (0: no limit).
    function: str = ""
    per_model: bool = False
    command: str = ""
    timeout: float = 0.0

    def validate(self) -> None:
        _check(self.precision in PRECISIONS, "trainer.precision", self.precision, f"must be one of {PRECISIONS}")
        _check(self.init in INITS, "trainer.init", self.init, f"must be one of {INITS}")
        from .train.base import TRAINERS
        from .train.command import check_template

        _wrap(TRAINERS.check, self.kind)  # names and syntax only: no user module is imported here
        _check(self.kind != "python" or is_import_path(self.function), "trainer.function", self.function,
               "must be 'package.module:function' for trainer.kind = 'python'")
        _check(self.kind == "python" or not self.function, "trainer.function", self.function,
               f"is read only by trainer.kind = 'python', not {self.kind!r}")
        _check(self.kind != "command" or check_template(self.command) is None, "trainer.command", self.command,
               check_template(self.command) or "")
        _check(self.timeout >= 0, "trainer.timeout", self.timeout, "must be non-negative (0: no limit)")
        _check(self.epochs >= 1, "trainer.epochs", self.epochs, "must be at least 1")
        _check(self.batch_size >= 1, "trainer.batch_size", self.batch_size, "must be at least 1")
        _check(self.lr > 0, "trainer.lr", self.lr, "must be positive")
        _check(0 <= self.momentum < 1, "trainer.momentum", self.momentum, "must lie in [0, 1)")
        _check(self.weight_decay >= 0, "trainer.weight_decay", self.weight_decay, "must be non-negative")
        _check(0 <= self.label_smoothing < 1, "trainer.label_smoothing", self.label_smoothing, "must lie in [0, 1)")
        _check(self.models_per_batch >= 1, "trainer.models_per_batch", self.models_per_batch, "must be at least 1")
        _check(self.threads >= 1, "trainer.threads", self.threads, "must be at least 1")
        _check(self.lr_schedule in LR_SCHEDULES, "trainer.lr_schedule", self.lr_schedule,
               f"must be one of {LR_SCHEDULES}")
        _check(self.lr_schedule != "triangle" or 0 <= self.lr_peak_epoch <= self.epochs,
               "trainer.lr_peak_epoch", self.lr_peak_epoch, f"must lie between 0 and trainer.epochs ({self.epochs})")
        _check(not self.nesterov or self.momentum > 0, "trainer.nesterov", self.nesterov,
               "needs trainer.momentum > 0")


@dataclass(frozen=True)
class Targets:
    # Named target sets whose margins every model records, in this order:
    # "train" is the training pool itself (train-set datamodels, for leakage and
    # near-duplicates); the others are the dataset's: "test" (the held-out
    # split) for digits and CIFAR-10, "shifted" (digits: the held-out split
    # translated one pixel right, a target distribution for subset selection),
    # or the names in data.targets for file datasets.
    sets: tuple[str, ...] = ("test",)

    def validate(self) -> None:
        _check(len(self.sets) >= 1, "targets.sets", list(self.sets), "must name at least one target set")
        _check(len(set(self.sets)) == len(self.sets), "targets.sets", list(self.sets), "must not repeat a set")


@dataclass(frozen=True)
class Fit:
    holdout: int = 500  # the last `holdout` models are never fitted on: they measure LDS
    val_fraction: float = 0.1  # share of the remaining models that choose lambda
    n_lambdas: int = 50
    lambda_ratio: float = 1e-3  # smallest lambda / each target's lambda_max
    max_iter: int = 200
    tol: float = 1e-4
    exclude_self: bool = True  # "train" targets are fitted only on models whose subset excludes them
    block_targets: int = 1024  # targets solved together: bounds memory; the unit a fit resumes from
    patience: int = 5  # a target's path stops after this many lambdas without a better validation MSE (0: whole grid)
    # "lasso", "relaxed" (least squares on the lasso's support blended with it by a validated gamma) or
    # "refit" (least squares on the support, gamma = 0): datamodels.regress.debias; recorded in the fit's settings
    estimator: str = "lasso"
    # "cubic": a monotone cubic per target from the score to the margin, for the size of counterfactual
    # effects (datamodels.regress.calibration; one more pass over the rows); "none": linear changes only
    calibration: str = "cubic"

    def validate(self) -> None:
        _check(self.holdout >= 0, "fit.holdout", self.holdout, "must be non-negative")
        _check(0 < self.val_fraction < 1, "fit.val_fraction", self.val_fraction, "must lie strictly between 0 and 1")
        _check(self.n_lambdas >= 1, "fit.n_lambdas", self.n_lambdas, "must be at least 1")
        _check(0 < self.lambda_ratio < 1, "fit.lambda_ratio", self.lambda_ratio, "must lie strictly between 0 and 1")
        _check(self.max_iter >= 1, "fit.max_iter", self.max_iter, "must be at least 1")
        _check(self.tol > 0, "fit.tol", self.tol, "must be positive")
        _check(self.block_targets >= 1, "fit.block_targets", self.block_targets, "must be at least 1")
        _check(self.patience >= 0, "fit.patience", self.patience, "must be non-negative (0: the whole grid)")
        from .regress.estimator import ESTIMATORS

        _check(self.estimator in ESTIMATORS, "fit.estimator", self.estimator, f"must be one of {ESTIMATORS}")
        from .regress.estimator import CALIBRATIONS

        _check(self.calibration in CALIBRATIONS, "fit.calibration", self.calibration, f"must be one of {CALIBRATIONS}")


SECTIONS: dict[str, type] = {
    "experiment": Experiment,
    "data": Data,
    "model": Model,
    "trainer": Trainer,
    "targets": Targets,
    "fit": Fit,
}


@dataclass(frozen=True)
class Spec:
    experiment: Experiment = field(default_factory=Experiment)
    data: Data = field(default_factory=Data)
    model: Model = field(default_factory=Model)
    trainer: Trainer = field(default_factory=Trainer)
    targets: Targets = field(default_factory=Targets)
    fit: Fit = field(default_factory=Fit)

    def validate(self) -> "Spec":
        for name in SECTIONS:
            getattr(self, name).validate()
        _check(
            self.fit.holdout < self.experiment.n_models,
            "fit.holdout",
            self.fit.holdout,
            f"must be smaller than experiment.n_models ({self.experiment.n_models})",
        )
        offered = self.data.target_sets()
        for s in self.targets.sets:
            _check(offered is None or s == "train" or s in offered, "targets.sets", s,
                   f"is not a target set of data.dataset = {self.data.dataset!r} (it has "
                   f"{['train', *offered] if offered is not None else []})")
        return self

    def to_dict(self) -> dict[str, dict[str, Any]]:
        return {name: _plain(dataclasses.asdict(getattr(self, name))) for name in SECTIONS}

    def to_toml(self) -> str:
        return toml_text(self.to_dict())

    def hash(self) -> str:
        """Hash of what determines the stored rows (fit settings excluded: refits are free)."""
        d = self.to_dict()
        d.pop("fit")
        blob = json.dumps(d, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def replace(self, **sections: dict[str, Any]) -> "Spec":
        """A copy with some fields changed: ``spec.replace(experiment={"n_models": 10})``."""
        new = {name: dataclasses.replace(getattr(self, name), **_coerce_section(name, vals))
               for name, vals in sections.items()}
        return dataclasses.replace(self, **new).validate()


def toml_text(sections: dict[str, dict[str, Any]]) -> str:
    """Tables of plain values (bool, int, float, str, lists) as TOML text; tomllib only reads."""
    def value(v) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)  # a JSON string is a valid TOML basic string
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{json.dumps(str(k))} = {value(x)}" for k, x in v.items()) + " }"
        return repr(v)

    lines = []
    for name, fields in sections.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {value(v)}" for k, v in fields.items()]
        lines.append("")
    return "\n".join(lines)


def _plain(d: dict[str, Any]) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else dict(v) if isinstance(v, dict) else v for k, v in d.items()}


def _wrap(check, value) -> None:
    """Run a registry's name check, raising its sentence as a SpecError."""
    from .errors import DatamodelsError

    try:
        check(value)
    except DatamodelsError as e:
        raise SpecError(str(e)) from None


def _check(ok: bool, field_name: str, value: Any, why: str) -> None:
    if not ok:
        raise SpecError(f"{field_name} = {value!r} {why}.")


def _coerce_section(section: str, raw: Any) -> dict[str, Any]:
    cls = SECTIONS[section]
    if not isinstance(raw, dict):
        raise SpecError(f"[{section}] must be a table of fields, got {raw!r}.")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in known:
            raise SpecError(
                f"{section}.{key} is not a known field (known: {', '.join(sorted(known))})."
            )
        out[key] = _coerce(f"{section}.{key}", hints[key], value)
    return out


def _coerce(name: str, hint: Any, value: Any) -> Any:
    origin = typing.get_origin(hint)
    if origin is dict:
        (_key, inner) = typing.get_args(hint)
        if not isinstance(value, dict):
            raise SpecError(f"{name} = {value!r} must be a table, e.g. {{ test = \"test.npz\" }}.")
        return {str(k): _coerce(f"{name}.{k}", inner, v) for k, v in value.items()}
    if origin is tuple:
        (inner, _ellipsis) = typing.get_args(hint)
        if not isinstance(value, (list, tuple)):
            raise SpecError(f"{name} = {value!r} must be a list.")
        return tuple(_coerce(name, inner, v) for v in value)
    if hint is bool:
        ok = isinstance(value, bool)
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is str:
        ok = isinstance(value, str)
    else:  # pragma: no cover - every field has one of the hints above
        ok = True
    if not ok:
        raise SpecError(f"{name} = {value!r} must be of type {hint.__name__}.")
    return value


def spec_from_dict(raw: dict[str, Any], base: Path | None = None) -> Spec:
    """The spec of a parsed TOML table; relative data file paths are taken from folder `base` when given."""
    if not isinstance(raw, dict):
        raise SpecError(f"the spec must be a table of sections, got {raw!r}.")
    for section in raw:
        if section not in SECTIONS:
            raise SpecError(f"[{section}] is not a known section (known: {', '.join(SECTIONS)}).")
    sections = {name: SECTIONS[name](**_coerce_section(name, raw.get(name, {}))) for name in SECTIONS}
    if base is not None:
        sections["data"] = sections["data"].with_paths_from(base)
    return Spec(**sections).validate()


def load_spec(path: str | Path) -> Spec:
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {str(path)!r} does not exist.")
    try:
        raw = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"spec file {str(path)!r} is not valid TOML ({e}).") from None
    return spec_from_dict(raw, base=path.resolve().parent)


def diff_specs(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Dotted names of the fields where two spec dicts differ (fit settings excluded)."""
    out = []
    for section in SECTIONS:
        if section == "fit":
            continue
        sa, sb = a.get(section, {}), b.get(section, {})
        for key in sorted(set(sa) | set(sb)):
            if sa.get(key) != sb.get(key):
                out.append(f"{section}.{key} (stored {sa.get(key)!r}, given {sb.get(key)!r})")
    return out
