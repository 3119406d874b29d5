"""The one command-line entry point: ``detect <command> ...``.

This is the only module that parses argv. Each sub-command's handler lives beside the code
it drives and takes the parsed ``argparse.Namespace``; it returns the process exit code:
0 everything done, 1 done but some inputs had problems (or ``--strict`` tripped). A usage
error (missing input, unwritable output, bad option) is a :class:`detect.errors.UsageError`
raised wherever it is found; :func:`main` alone prints it as ``detect <command>: error: ...``
(argparse's format for its own errors) and returns 2. Interrupted: 130.
``tools/*.py`` are thin wrappers that call :func:`main` with their sub-command.
"""

from __future__ import annotations

import argparse
import importlib
import re
import sys
from typing import Callable, NamedTuple, Optional, Sequence

from detect.checks import default_note  # standard library only: xml2pkl's re-run stays light
from detect.errors import UsageError


class Command(NamedTuple):
    """One command. Its module is imported only when the command runs (or for every command, in
    ``build_parser()``), so ``detect --help`` imports none."""

    module: str  # the *_cli.py beside the code it drives
    options: str  # the function there that adds the command's options to its sub-parser
    handler: str  # the function there that runs it: args -> exit code
    help: str  # the line `detect --help` shows


COMMANDS: dict[str, Command] = {
    "xml2pkl": Command("detect.data.cache.xml2pkl_cli", "add_xml2pkl_options", "cmd_xml2pkl",
                       "parse Pascal VOC XML into a versioned pickle cache"),
    "synth": Command("detect.data.synth.synth_cli", "add_synth_options", "cmd_synth",
                     "render synthetic retail shelves as a VOC dataset"),
    "train": Command("detect.infer.train_cli", "add_train_options", "cmd_train",
                     "train a detector"),
    "train-classifier": Command("detect.engine.train_crops_cli", "add_train_classifier_options", "cmd_train_classifier",
                                "train the second look: a product classifier of crops around boxes"),
    "val": Command("detect.infer.val_cli", "add_val_options", "cmd_val",
                   "evaluate weights on a dataset split (VOC and COCO metrics)"),
    "predict": Command("detect.infer.predict_cli", "add_predict_options", "cmd_predict",
                       "detect products in images, folders, videos or streams"),
    "demo": Command("detect.infer.predict_cli", "add_demo_options", "cmd_demo",
                    "render synthetic shelves, detect with the shipped weights, save drawings"),
    "export": Command("detect.infer.export_cli", "add_export_options", "cmd_export",
                      "export weights to ONNX (dynamic batch) or TorchScript"),
    "proposals": Command("detect.engine.proposals_cli", "add_proposals_options", "cmd_proposals",
                         "selective-search proposals for a cache, cached beside it"),
    "tune": Command("detect.tune.tune_cli", "add_tune_options", "cmd_tune",
                    "hyperparameter search (grid, random, TPE) with Optuna"),
    "convert": Command("detect.data.convert.convert_cli", "add_convert_options", "cmd_convert",
                       "convert a dataset, or predict's detections, to VOC, COCO, YOLO or a cache"),
    "serve": Command("detect.serve.serve_cli", "add_serve_options", "cmd_serve",
                     "HTTP detection service with a web page (FastAPI + uvicorn)"),
    "audit": Command("detect.audit.audit_cli", "add_audit_options", "cmd_audit",
                     "shelf audit: rows, facings, gaps, planogram compliance, share of shelf, unique products in a video"),
}


class _Help(argparse.HelpFormatter):
    """``--help`` shows each option's default and the rule its value must follow (a
    :func:`~detect.checks.checked` type's ``rule``), except where there is no default to show (an
    option that leaves a config value alone, a flag that is off) or the help already says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if any(action.default is v for v in (None, False, argparse.SUPPRESS)) or "(default:" in text or not action.option_strings:
            return text
        note = default_note("%(default)s", getattr(action.type, "rule", None))
        return f"{text} {note}"


def _load(command: str, function: str) -> Callable:
    """A command's ``"options"`` or ``"handler"`` function, its module imported."""
    c = COMMANDS[command]
    return getattr(importlib.import_module(c.module), getattr(c, function))


def build_parser(command: Optional[str] = None, options: bool = True) -> argparse.ArgumentParser:
    """The ``detect`` parser; with ``command`` (a key of :data:`COMMANDS`) only that command's
    sub-parser gets its options: ``detect xml2pkl`` on an up-to-date cache takes about as long as
    its stat calls, and building ``train``'s options from the config table would cost more.
    ``options=False``: the commands without their options (``detect --help``, a missing or
    unknown command), importing none of their modules."""
    parser = argparse.ArgumentParser(prog="detect", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, c in COMMANDS.items():
        p = sub.add_parser(name, help=c.help, formatter_class=_Help)
        if options and command in (None, name):
            _load(name, "options")(p)
    return parser


def _version() -> str:
    from detect import __version__

    return __version__


def _key_value_hint(parser: argparse.ArgumentParser, argv: Sequence[str]) -> None:
    """After argparse refused the arguments: when some are ultralytics' ``key=value`` spelling
    (``detect train data=x epochs=1``), say how they are spelled here (``--data x --epochs 1``)."""
    pairs = [a.split("=", 1) for a in argv[1:] if re.fullmatch(r"[A-Za-z][\w-]*=.*", a)]
    if not pairs or argv[0] not in COMMANDS:
        return
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[argv[0]]
    known = sub._option_string_actions
    good = [f"--{k.replace('_', '-')} {v}" for k, v in pairs if f"--{k.replace('_', '-')}" in known]
    bad = [k for k, _ in pairs if f"--{k.replace('_', '-')}" not in known]
    hint = f"detect {argv[0]}: hint: options are spelled --key value, not key=value (the ultralytics spelling)"
    if good:
        hint += f": {' '.join(good)}"
    if bad:
        hint += f"; no option for {', '.join(bad)} (see detect {argv[0]} --help)"
    print(hint, file=sys.stderr)


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command in ("train", "tune"):  # before a module of theirs imports torch
        from detect.engine.cpu_alloc import keep_heap_for_training, passive_thread_wait

        keep_heap_for_training()  # before torch allocates anything: about 2x faster CPU training
        passive_thread_wait()  # before torch starts OpenMP: two trainings on one machine share its cores
    parser = build_parser(command, options=command is not None)
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        if e.code == 2:
            _key_value_hint(parser, argv)
        raise
    try:
        return int(_load(args.command, "handler")(args) or 0)
    except UsageError as e:  # the one mapping of a usage error, raised anywhere below, to output
        print(f"detect {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
