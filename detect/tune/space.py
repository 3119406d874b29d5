"""Search-space files for ``detect tune``: parse, validate, and map parameters onto the config.

A space file is YAML::

    study: lr-momentum          # optional; default: the file's stem (same name = same study)
    sampler: grid               # optional default for --sampler: grid | random | tpe
    metric: voc_ap50            # optional; a key of the per-epoch validation metrics
    direction: maximize         # optional; maximize | minimize
    pruner: {type: median, min_epochs: 2, startup_trials: 2}   # median | halving | none
    params:
      lr: {values: [0.1, 0.01, 0.001], log: true}     # a grid (categorical for random/TPE)
      momentum: [0.8, 0.88, 0.9]                      # shorthand for values
      weight_decay: {low: 1.0e-5, high: 1.0e-3, log: true, num: 3}  # range; num = grid points
      bn: {choice: [frozen, train]}                   # a choice (same as values)
      model.nms_thresh: {low: 0.4, high: 0.6}         # any scalar config field, section.field

A parameter is named by a config field's own name (``lr``) when no other field has it, by an
alias the field declares (``beta1``), or by its path (``model.nms_thresh``): any number, name or
boolean setting of :mod:`detect.config`, whose type gives the choices and whose declared
``check`` the values must pass. Every problem raises :class:`SpaceError` naming the file, the
parameter and what to change.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional


from detect.config import MOVED, ExperimentConfig
from detect.settings import Setting, set_value, settings
from detect.errors import UsageError
from detect.models.specs import setting_choices
from detect.readers import FileReadError, load_yaml

SAMPLERS = ("grid", "random", "tpe")
PRUNERS = ("median", "halving", "none")

_SCALARS = (int, float, str, bool)
_PARAM_KEYS = {"values", "choice", "low", "high", "log", "step", "num"}
_TOP_KEYS = {"study", "sampler", "metric", "direction", "pruner", "params"}


class SpaceError(UsageError):
    """A search-space file is wrong; the message names the file, the parameter and the fix."""


@dataclass(frozen=True)
class Param:
    """One searched parameter. ``kind`` is "values" (a finite list; grid points, categorical for
    random/TPE) or "range" (``low``..``high``, ``log`` scale, optional ``step``; ``num`` grid
    points when searched by the grid sampler)."""

    name: str
    target: str  # the path of an ExperimentConfig field, "section.field"
    kind: str
    values: tuple = ()
    low: Optional[float] = None
    high: Optional[float] = None
    log: bool = False
    step: Optional[float] = None
    num: Optional[int] = None
    is_int: bool = False

    def grid(self) -> Optional[list]:
        """Grid points, or None when a range has no ``num`` (not searchable by a grid)."""
        if self.kind == "values":
            return list(self.values)
        if self.num is None:
            return None
        lo, hi = (math.log(self.low), math.log(self.high)) if self.log else (self.low, self.high)
        pts = [lo + (hi - lo) * i / (self.num - 1) for i in range(self.num)]
        pts = [math.exp(p) for p in pts] if self.log else pts
        if self.is_int:
            return sorted({int(round(p)) for p in pts})
        return [float(f"{p:.6g}") for p in pts]

    @property
    def log_scale(self) -> bool:
        """Plot this parameter on a log axis: a log range, or positive numbers spanning >= 100x."""
        if self.log:
            return True
        nums = [v for v in self.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
        return len(nums) == len(self.values) > 1 and min(nums) > 0 and max(nums) / min(nums) >= 100

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for this parameter's value."""
        if self.kind == "values":
            return trial.suggest_categorical(self.name, list(self.values))
        if self.is_int:
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log)
        return trial.suggest_float(self.name, self.low, self.high, step=self.step, log=self.log)


@dataclass
class PrunerSpec:
    type: str = "median"
    min_epochs: int = 2  # earliest epoch at which a trial may be stopped
    startup_trials: int = 2  # trials that always run to the end before pruning starts


@dataclass
class SearchSpace:
    params: list[Param]
    path: str = ""
    study: str = ""
    sampler: Optional[str] = None
    metric: str = "voc_ap50"
    direction: str = "maximize"
    pruner: PrunerSpec = field(default_factory=PrunerSpec)

    def grid_space(self) -> dict[str, list]:
        """{name: grid points} for ``optuna.samplers.GridSampler``."""
        out = {}
        for p in self.params:
            g = p.grid()
            if g is None:
                raise SpaceError(
                    f"{self.path}: parameter {p.name!r}: a range without 'num' cannot be searched by the grid sampler; "
                    f"add num: N (grid points) or give values: [...], or use --sampler random/tpe"
                )
            out[p.name] = g
        return out

    def grid_size(self) -> int:
        return math.prod(len(v) for v in self.grid_space().values())

    @property
    def griddable(self) -> bool:
        return all(p.grid() is not None for p in self.params)

    def apply(self, cfg: ExperimentConfig, values: dict[str, Any]) -> ExperimentConfig:
        """A copy of ``cfg`` with each parameter's value set on its config field."""
        out = copy.deepcopy(cfg)
        for p in self.params:
            if p.name in values:
                set_value(out, p.target, values[p.name])
        return out

    def signature(self) -> dict[str, Any]:
        """What must not change between runs of one study (stored in the study)."""
        return {
            "params": {p.name: [p.target, p.kind, list(p.values), p.low, p.high, p.log, p.step, p.is_int] for p in self.params},
            "metric": self.metric,
            "direction": self.direction,
        }


def load_space(path: str | Path) -> SearchSpace:
    """Read and validate a space YAML; raises :class:`SpaceError` (or FileNotFoundError)."""
    path = str(path)
    if not os.path.lexists(path):
        raise SpaceError(f"{path}: search space file not found")
    try:
        raw = load_yaml(path, "search space file")  # bounded, regular files only, depth and alias limits
    except FileReadError as e:
        raise SpaceError(str(e)) from None
    return parse_space(raw, path)


def parse_space(raw: Any, path: str = "<space>") -> SearchSpace:
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: expected a mapping with a 'params' section, got {type(raw).__name__}")
    unknown = set(raw) - _TOP_KEYS
    if unknown:
        raise SpaceError(f"{path}: unknown key(s) {sorted(unknown)}; known: {sorted(_TOP_KEYS)}")
    params_raw = raw.get("params")
    if not isinstance(params_raw, dict) or not params_raw:
        raise SpaceError(f"{path}: 'params' must be a non-empty mapping of parameter name -> values/range/choice")
    params, targets = [], {}
    for name, spec in params_raw.items():
        p = _parse_param(str(name), spec, path)
        if p.target in targets:
            raise SpaceError(f"{path}: parameters {targets[p.target]!r} and {p.name!r} both set {p.target}; keep one")
        targets[p.target] = p.name
        params.append(p)

    sampler = raw.get("sampler")
    if sampler is not None and sampler not in SAMPLERS:
        raise SpaceError(f"{path}: sampler {sampler!r} unknown; use one of {list(SAMPLERS)}")
    direction = raw.get("direction", "maximize")
    if direction not in ("maximize", "minimize"):
        raise SpaceError(f"{path}: direction {direction!r} must be 'maximize' or 'minimize'")
    metric = raw.get("metric", "voc_ap50")
    if not isinstance(metric, str) or not metric:
        raise SpaceError(f"{path}: metric must be the name of a validation metric, e.g. voc_ap50")
    study = raw.get("study", Path(path).stem)
    if not isinstance(study, str) or not study:
        raise SpaceError(f"{path}: study must be a non-empty name")
    space = SearchSpace(params, path, study, sampler, metric, direction, _parse_pruner(raw.get("pruner"), path))
    if sampler == "grid":
        space.grid_space()  # raises if a range lacks num
    return space


def _parse_pruner(raw: Any, path: str) -> PrunerSpec:
    if raw is None:
        return PrunerSpec()
    if isinstance(raw, str):
        raw = {"type": raw}
    if not isinstance(raw, dict):
        raise SpaceError(f"{path}: pruner must be a mapping like {{type: median, min_epochs: 2, startup_trials: 2}}")
    unknown = set(raw) - {"type", "min_epochs", "startup_trials"}
    if unknown:
        raise SpaceError(f"{path}: pruner: unknown key(s) {sorted(unknown)}; known: type, min_epochs, startup_trials")
    spec = PrunerSpec(**raw)
    if spec.type not in PRUNERS:
        raise SpaceError(f"{path}: pruner type {spec.type!r} unknown; use one of {list(PRUNERS)}")
    for k in ("min_epochs", "startup_trials"):
        v = getattr(spec, k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise SpaceError(f"{path}: pruner {k} must be an integer >= 0 (got {v!r})")
    return spec


@functools.lru_cache(maxsize=None)
def search_names() -> dict[str, Setting]:
    """Parameter name -> setting: every field's path, its own name when no other field has it,
    and the aliases it declares."""
    counts = Counter(s.name for s in settings())
    names: dict[str, Setting] = {}
    for s in settings():
        names[s.path] = s
        names.update({a: s for a in s.aliases})
        if counts[s.name] == 1:
            names.setdefault(s.name, s)
    return names


def resolve_target(name: str) -> Setting:
    """The setting a parameter name stands for (a path a setting moved from too, e.g.
    ``model.roi_op``); KeyError if none."""
    key = name.replace("-", "_")
    return search_names()[MOVED.get(key, key)]


def _parse_param(name: str, spec: Any, path: str) -> Param:
    where = f"{path}: parameter {name!r}"
    try:
        setting = resolve_target(name)
    except KeyError:
        short = sorted(n for n, s in search_names().items() if "." not in n and s.kind in _SCALARS)
        raise SpaceError(
            f"{where}: unknown parameter; use one of {short} or a config field as section.field "
            f"(e.g. train.gamma, model.nms_thresh)"
        ) from None
    target, ftype = setting.path, setting.kind
    if ftype not in _SCALARS:
        raise SpaceError(f"{where}: {target} is a {ftype.__name__} setting and cannot be searched; only numbers, strings and booleans")
    if isinstance(spec, list):
        spec = {"values": spec}
    if not isinstance(spec, dict):
        raise SpaceError(f"{where}: expected values: [...], choice: [...] or low/high (a range), got {spec!r}")
    unknown = set(spec) - _PARAM_KEYS
    if unknown:
        raise SpaceError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(_PARAM_KEYS)}")
    has_list = "values" in spec or "choice" in spec
    has_range = "low" in spec or "high" in spec
    if has_list == has_range or ("values" in spec and "choice" in spec):
        raise SpaceError(f"{where}: give exactly one of values: [...], choice: [...] or a range low/high")
    log = spec.get("log", False)
    if not isinstance(log, bool):
        raise SpaceError(f"{where}: log must be true or false (got {log!r})")

    if has_list:
        values = spec.get("values", spec.get("choice"))
        if not isinstance(values, list) or not values:
            raise SpaceError(f"{where}: values must be a non-empty list")
        if set(spec) - {"values", "choice", "log"}:
            raise SpaceError(f"{where}: low/high/step/num belong to a range, not to a list of values")
        checked = [_check_value(v, setting, where) for v in values]
        if len(set(map(repr, checked))) != len(checked):
            raise SpaceError(f"{where}: values contain duplicates: {values}")
        if log and not all(isinstance(v, (int, float)) and v > 0 for v in checked):
            raise SpaceError(f"{where}: log: true needs positive numbers")
        return Param(name, target, "values", tuple(checked), log=log, is_int=ftype is int)

    if ftype not in (int, float):
        raise SpaceError(f"{where}: {target} is a {ftype.__name__} setting; a range needs a number, use values: [...]")
    if "low" not in spec or "high" not in spec:
        raise SpaceError(f"{where}: a range needs both low and high")
    low = _check_value(spec["low"], setting, f"{where}: low")
    high = _check_value(spec["high"], setting, f"{where}: high")
    if not low < high:
        raise SpaceError(f"{where}: low must be < high (got low={low}, high={high})")
    if log and low <= 0:
        raise SpaceError(f"{where}: a log range needs low > 0 (got low={low})")
    step = spec.get("step")
    if step is not None:
        if not isinstance(step, (int, float)) or isinstance(step, bool) or step <= 0:
            raise SpaceError(f"{where}: step must be a number > 0 (got {step!r})")
        if ftype is int and not isinstance(step, int):
            raise SpaceError(f"{where}: {target} is an integer; step must be an integer (got {step})")
        if log and step != 1:
            raise SpaceError(f"{where}: step and log: true cannot be combined")
        if log:
            step = None
    num = spec.get("num")
    if num is not None and (not isinstance(num, int) or isinstance(num, bool) or num < 2):
        raise SpaceError(f"{where}: num (grid points) must be an integer >= 2 (got {num!r})")
    return Param(name, target, "range", low=low, high=high, log=log, step=step, num=num, is_int=ftype is int)


def _check_value(v: Any, setting: Setting, where: str) -> Any:
    target, ftype = setting.path, setting.kind
    if ftype is bool:
        if not isinstance(v, bool):
            raise SpaceError(f"{where}: {target} takes true/false, got {v!r}")
        return v
    if ftype is str:
        if not isinstance(v, str):
            raise SpaceError(f"{where}: {target} takes a name, got {v!r}")
        allowed = setting.choices or setting_choices().get(target)  # model.name: the table of detectors
        if allowed and v not in allowed:
            raise SpaceError(f"{where}: {v!r} is not a valid {target}; use one of {list(allowed)}")
        return v
    if isinstance(v, str):  # PyYAML reads 1e-3 (no dot) as a string
        try:
            v = int(v) if ftype is int and v.strip().lstrip("+-").isdigit() else float(v)
        except ValueError:
            pass
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (isinstance(v, float) and not math.isfinite(v)):
        raise SpaceError(f"{where}: {target} takes a number, got {v!r}")
    if ftype is int:
        if not (isinstance(v, int) or float(v).is_integer()):
            raise SpaceError(f"{where}: {target} takes an integer, got {v!r}")
        v = int(v)
    else:
        v = float(v)
    rule = setting.violates(v)
    if rule:
        raise SpaceError(f"{where}: {target} must be {rule} (got {v!r})")
    return v
