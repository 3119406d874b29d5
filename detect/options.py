"""Command-line options derived from the settings declared in :mod:`detect.config`.

:func:`add_config_options` adds one option per setting that declares a ``cli`` spelling
(choices from its ``Literal`` type, ``--x/--no-x`` for a boolean, its default and rule in the
help); :func:`apply_config_options` sets the options that were given on a config. An option
left out is ``None`` in the namespace, so a ``--config`` YAML keeps its value.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Mapping, Optional, Sequence

from detect.checks import checked, default_note
from detect.config import ExperimentConfig
from detect.settings import Setting, set_value, settings

SECTIONS = ("model", "data", "train", "preprocess")


def option_dest(s: Setting) -> str:
    """The namespace attribute of ``s``'s option (argparse's own rule: ``--weight-decay`` -> ``weight_decay``)."""
    return s.cli.lstrip("-").replace("-", "_")


def command_line_settings(sections: Sequence[str] = SECTIONS, paths: Optional[Sequence[str]] = None) -> list[Setting]:
    """The settings of ``sections`` (only those at ``paths``, when given) that have a
    command-line option, in declaration order."""
    return [s for s in settings() if s.cli and s.path.split(".")[0] in sections and (paths is None or s.path in paths)]


def add_config_options(parser: argparse.ArgumentParser, sections: Sequence[str] = SECTIONS,
                       paths: Optional[Sequence[str]] = None, choices: Optional[Mapping[str, Sequence[str]]] = None) -> None:
    """Add an option to ``parser`` for every setting of ``sections`` (or at ``paths``) that declares one.
    ``choices``: setting path -> allowed values, for settings whose values a table of a higher
    layer decides (``model.name``: :func:`detect.models.specs.setting_choices`)."""
    for s in command_line_settings(sections, paths):
        kw: dict[str, Any] = {"dest": option_dest(s), "default": None, "help": _help(s)}
        if s.kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = _parse_value(s)
            if s.choices or (choices and s.path in choices):
                kw["choices"] = s.choices or tuple(choices[s.path])
        parser.add_argument(s.cli, **kw)


def apply_config_options(cfg: ExperimentConfig, args: argparse.Namespace, sections: Sequence[str] = SECTIONS,
                         paths: Optional[Sequence[str]] = None) -> list[str]:
    """Set on ``cfg`` every option of ``sections`` (or at ``paths``) given in ``args`` (not None);
    returns their paths."""
    given = []
    for s in command_line_settings(sections, paths):
        value = getattr(args, option_dest(s), None)
        if value is not None:
            set_value(cfg, s.path, value)
            given.append(s.path)
    return given


def _help(s: Setting) -> str:
    if s.kind is bool and s.default is None:  # neither option given: the setting's auto
        default = "neither (auto)"
    elif s.kind is bool:
        default = s.cli if s.default else "--no-" + s.cli.lstrip("-")
    else:
        default = "none" if s.default in (None, "") else s.default
    return f"{s.help} {default_note(default, s.check)}".replace("%", "%%")  # argparse formats help with %


def _parse_value(s: Setting) -> Callable[[str], Any]:
    """``str -> value`` for ``s``: converted to its type and checked against its rule."""
    kind = s.kind if s.kind in (int, float) else str
    return checked(kind, s.check if kind is not str else None)
