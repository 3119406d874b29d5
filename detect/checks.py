"""The rules an option or config value may have to follow, and the argparse type that applies one.

Standard library only: ``detect/cli.py`` builds every command's options with :func:`checked`,
and ``detect xml2pkl`` on an up-to-date cache must not pay for importing yaml or numpy
(:mod:`detect.config` re-exports :data:`CHECKS` for the settings declared there).
"""

from __future__ import annotations

import argparse
import math
from typing import Any, Callable, Optional

# The rules a value may have to follow: the text names the rule in error messages and --help.
CHECKS: dict[str, Callable[[float], bool]] = {
    "> 0": lambda v: v > 0,
    ">= 0": lambda v: v >= 0,
    "in [0, 1)": lambda v: 0 <= v < 1,
    "in [0, 1]": lambda v: 0 <= v <= 1,
    ">= 1": lambda v: v >= 1,
    ">= 7": lambda v: v >= 7,  # ONNX opsets torch exports
    ">= 32": lambda v: v >= 32,
    "0 or >= 2": lambda v: v == 0 or v >= 2,
    "0 or >= 32": lambda v: v == 0 or v >= 32,
}


# Limits on the sizes a model file declares (a checkpoint's config, an .onnx file's metadata): an
# .onnx saying imgsz 100000 made predict allocate 27.9 GiB, a .pt saying so 120 GB.
MAX_IMGSZ = 4096  # input side in pixels (SSD 300-640; sliced inference tiles a large photo instead)
MAX_CLASSES = 100_000  # class names of a model or a dataset


def model_size_problem(imgsz: Any, num_classes: Any) -> Optional[str]:
    """What is wrong with a model file's declared input side and class count, or None: both
    must be integers, ``imgsz`` in [32, :data:`MAX_IMGSZ`], classes in [1, :data:`MAX_CLASSES`]."""
    if isinstance(imgsz, bool) or not isinstance(imgsz, int) or not 32 <= imgsz <= MAX_IMGSZ:
        return f"its input size imgsz {imgsz!r:.40} is not an integer from 32 to {MAX_IMGSZ}"
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or not 1 <= num_classes <= MAX_CLASSES:
        return f"it declares {num_classes!r:.40} classes, not 1 to {MAX_CLASSES:,}"
    return None


def default_note(default: Any, rule: Optional[str] = None) -> str:
    """``(default: D; must be R)``: how ``--help`` states an option's default and rule."""
    return f"(default: {default}{f'; must be {rule}' if rule else ''})"


def checked(kind: type, rule: Optional[str] = None) -> Callable[[str], Any]:
    """An argparse ``type``: ``str -> kind`` (int, float or str), a float finite, the value
    following ``rule`` (one of :data:`CHECKS`); else one sentence saying what was expected,
    which argparse prints as a usage error (exit 2). The rule is kept as ``.rule`` so ``--help``
    can state it."""
    if rule is not None and rule not in CHECKS:
        raise ValueError(f"unknown check {rule!r}; known: {list(CHECKS)}")

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
        if rule is not None and not CHECKS[rule](value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in "invalid int value" messages
    parse.rule = rule  # type: ignore[attr-defined]
    return parse


# argparse types of command options that are not settings of detect/config.py (the *_cli.py modules)
COUNT = checked(int, ">= 1")  # a number of images, items, trials...
NONNEG = checked(int, ">= 0")  # processes (0: in this process, or one per core), sizes where 0 means none
FRACTION = checked(float, "in [0, 1]")
