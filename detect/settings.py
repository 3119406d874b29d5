"""The option table: every declared field of :class:`~detect.config.ExperimentConfig` as a
:class:`Setting` (:func:`settings`), and reading or setting a field by its dotted path.

The fields are declared in :mod:`detect.config` with :func:`~detect.config.setting`; this module
reads those declarations (types, defaults, help, ``cli``, ``check``, ``aliases``) for the layers
that derive from them: :mod:`detect.options` (the ``detect train`` options) and ``detect tune``
(its parameter names, choices and checks).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from dataclasses import dataclass
from typing import Any, Literal, Optional

from detect.checks import CHECKS
from detect.errors import UsageError


@dataclass(frozen=True)
class Setting:
    """One declared field of :class:`ExperimentConfig`, as :func:`settings` lists it.

    Attributes:
        path: where it lives, ``"train.weight_decay"`` (nested sections add a part).
        type: the resolved annotation (``Literal[...]``, ``Optional[str]``, ``list[float]``...).
        default, help, cli, check, aliases: as declared with :func:`setting`.
    """

    path: str
    type: Any
    default: Any
    help: str
    cli: Optional[str]
    check: Optional[str]
    aliases: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.path.rsplit(".", 1)[-1]

    @property
    def choices(self) -> Optional[tuple]:
        """The values of a ``Literal[...]`` type (inside ``Optional`` too), else None."""
        t = _strip_optional(self.type)
        return typing.get_args(t) if typing.get_origin(t) is Literal else None

    @property
    def kind(self) -> type:
        """The Python type of one value: bool, int, float, str, or the container (list, dict, tuple)."""
        t = _strip_optional(self.type)
        if self.choices:
            return type(self.choices[0])
        return typing.get_origin(t) or t

    def violates(self, value: Any) -> Optional[str]:
        """The rule ``value`` breaks (e.g. ``"> 0"``), or None when it is fine."""
        if self.check is None or CHECKS[self.check](value):
            return None
        return self.check


def _strip_optional(t: Any) -> Any:
    args = typing.get_args(t)
    if typing.get_origin(t) is typing.Union and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0] if len(rest) == 1 else t
    return t


@functools.lru_cache(maxsize=None)
def settings(cls: Optional[type] = None, prefix: str = "") -> tuple[Setting, ...]:
    """Every declared field of ``cls`` (default :class:`ExperimentConfig`), sections expanded,
    in declaration order."""
    if cls is None:
        from detect.config import ExperimentConfig  # the sections are declared there

        cls = ExperimentConfig
    hints = typing.get_type_hints(cls)
    out: list[Setting] = []
    for f in dataclasses.fields(cls):
        t = hints[f.name]
        if dataclasses.is_dataclass(t):
            out += settings(t, f"{prefix}{f.name}.")
            continue
        default = f.default_factory() if f.default is dataclasses.MISSING else f.default
        m = f.metadata
        out.append(Setting(prefix + f.name, t, default, m.get("help", ""), m.get("cli"), m.get("check"), m.get("aliases", ())))
    return tuple(out)


def get_value(cfg: Any, path: str) -> Any:
    """``cfg``'s value at ``path`` (``"train.lr"``)."""
    for part in path.split("."):
        cfg = getattr(cfg, part)
    return cfg


def set_value(cfg: Any, path: str, value: Any) -> None:
    """Set ``cfg``'s field at ``path`` (``"train.lr"``) to ``value``."""
    *parents, name = path.split(".")
    for part in parents:
        cfg = getattr(cfg, part)
    if not hasattr(cfg, name):
        raise UsageError(f"unknown setting {path!r}")
    setattr(cfg, name, value)
