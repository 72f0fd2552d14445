"""Shared CLI plumbing: param flags generated from the params dataclasses, error handling.

Flags are built from the dataclass fields (``max_leaf_size`` -> ``--max-leaf-size``) with the
field docstring as help and the dataclass default shown, so the CLI can never drift from the
code's defaults. Only flags the user typed override a ``--config`` file.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from collections.abc import Callable
from dataclasses import MISSING, fields
from typing import Any, TypeVar

from xmc.errors import XMCError
from xmc.log import crash_log_dir, one_line, setup_cli_logging, write_crash_log
from xmc.params import GROUPS, XMCParams

T = TypeVar("T")
_TYPES: dict[str, Callable[[str], Any]] = {"int": int, "float": float, "bool": bool}


def add_dataclass_flags(group: Any, cls: type, choices: dict[str, tuple[str, ...]] | None = None) -> None:
    """One flag per field of a params dataclass (``max_leaf_size`` -> ``--max-leaf-size``).

    The field docstring is the help, the dataclass default is shown, and absent flags are
    suppressed (so they never override a ``--config`` file). ``choices`` maps a declared type
    name (e.g. ``"Negatives"``) to its allowed values.
    """
    docs = field_docs(cls)
    for f in fields(cls):
        default = f.default if f.default is not MISSING else None
        flag = "--" + f.name.replace("_", "-")
        # argparse %-formats help text; RST ``literals`` read better as plain quotes in a terminal
        doc = " ".join(docs.get(f.name, "").split()).replace("``", "'").replace("%", "%%")
        help_text = f"{doc} (default: {default})"
        declared = str(f.type)
        kind = next((k for k in choices or {} if declared.startswith(k)), None)
        if choices and kind is not None:
            group.add_argument(flag, dest=f.name, choices=choices[kind], default=argparse.SUPPRESS,
                               help=help_text)
        elif declared == "bool":
            group.add_argument(flag, dest=f.name, action=argparse.BooleanOptionalAction,
                               default=argparse.SUPPRESS, help=help_text)
        else:
            group.add_argument(flag, dest=f.name, type=_TYPES.get(declared, str),
                               default=argparse.SUPPRESS, metavar=declared.upper(), help=help_text)


def add_param_flags(parser: argparse.ArgumentParser, groups: tuple[str, ...] = tuple(GROUPS)) -> None:
    """Flags for the model parameters (``xmc.params``), one argument group per params class."""
    from xmc import params as P

    choices = {"Negatives": P.NEGATIVES, "PostProcessor": P.POST_PROCESSORS, "Device": P.DEVICES,
               "CopyMerge": P.COPY_MERGES, "Algorithm": P.ALGORITHMS, "DenseKind": P.DENSE_KINDS,
               "FeatureWeightMeasure": P.FEATURE_WEIGHT_MEASURES,
               "Literal": ("float32", "float64")}
    for name in groups:
        cls = GROUPS[name]
        group = parser.add_argument_group(f"{name} parameters (defaults from xmc.params.{cls.__name__})")
        add_dataclass_flags(group, cls, choices)
    if "tree" in groups:
        parser.add_argument("--normalize-rows", dest="normalize_rows",
                            action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                            help="L2-normalise feature rows at fit and predict (default: True)")


def dataclass_from_args(cls: type[T], args: argparse.Namespace) -> T:
    """An instance of a flags dataclass from parsed args (absent flags keep the defaults)."""
    names = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    return cls(**{n: getattr(args, n) for n in names if hasattr(args, n)})


def positive_int(text: str) -> int:
    """argparse type of a count flag (``--topk``, ``--beam-size``): an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if not 1 <= value < 2**31:
        raise argparse.ArgumentTypeError(f"{value} is invalid: use an integer >= 1 (and < 2^31)")
    return value


def check_out_suffix(flag: str, path: str, allowed: tuple[str, ...]) -> None:
    """Refuse an output name whose extension we would not honour (a csv never gets an npz inside)."""
    from xmc.errors import ParamError

    if not path.endswith(allowed):
        raise ParamError(f"{flag} {path!r}: unknown output format; the name must end in "
                         + " or ".join(allowed))


def params_from_args(args: argparse.Namespace) -> XMCParams:
    """Defaults <- ``--config`` JSON <- explicit flags."""
    params = XMCParams.from_json(args.config) if getattr(args, "config", None) else XMCParams()
    known = {f.name for cls in GROUPS.values() for f in fields(cls)} | {"normalize_rows"}
    overrides = {k: v for k, v in vars(args).items() if k in known}
    return params.replace(**overrides)


EXIT_BAD_INPUT = 2
EXIT_INTERNAL = 1
EXIT_INTERRUPTED = 130


def run_main(fn: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """Run a command under the CLI's failure contract (docs/operations.md, "Failure behaviour").

    Input we do not accept (an ``XMCError``: file, line, field or flag named) prints one message
    and exits 2, as does a path the user chose that cannot be written (permission, read-only, full
    disk: ``USER_FIXABLE``). Anything else is our bug or the machine's: one line with the error and the path
    of a log file holding the full traceback, exit 1; never a bare traceback on the user's screen.
    """
    setup_cli_logging()
    try:
        return fn(args)
    except XMCError as e:
        print(f"xmc: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("xmc: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as e:
        if e.errno not in USER_FIXABLE:
            return internal_error(e)
        print(f"xmc: error: {os_error_message(e)}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as e:  # the one place an unexpected error is caught: logged in full, summarised
        return internal_error(e)


USER_FIXABLE = {errno.EACCES: "choose a path you can write, or change its permissions",
                errno.EPERM: "choose a path you can write, or change its permissions",
                errno.EROFS: "the file system is read-only: choose another path",
                errno.ENOSPC: "free space on that disk, or write somewhere else",
                errno.EDQUOT: "your disk quota is used up: free space, or write somewhere else"}
"""Errors of the machine that name a path the user chose and can fix: exit 2 with the path and
what to do, not an internal error and a crash log."""


def os_error_message(e: OSError) -> str:
    """'PATH: No space left on device (free space ...)': the path, the system's words, the fix."""
    where = f"{e.filename}: " if e.filename else ""
    return f"{where}{e.strerror or e} ({USER_FIXABLE.get(e.errno or 0, '')})"


def internal_error(e: BaseException) -> int:
    """Our bug or the machine's: the traceback to a log file, one line on stderr, exit 1."""
    log = write_crash_log(e)
    where = f"full traceback in {log}" if log else f"no log written to {crash_log_dir()}"
    print(f"xmc: internal error: {one_line(e)} ({where})", file=sys.stderr)
    return EXIT_INTERNAL


def job_main(
    prog: str, description: str, add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int], argv: list[str] | None,
) -> int:
    """The ``main(argv)`` of a job run on its own (``python jobs/train.py ...``, spark-submit)."""
    parser = argparse.ArgumentParser(prog=prog, description=description,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_main(run, parser.parse_args(argv))


def print_json(obj: dict[str, Any]) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


def field_docs(cls: type) -> dict[str, str]:
    """Attribute docstrings of a params dataclass (used by the CLI's --help)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for prev, node in zip(body, body[1:], strict=False):
        if (
            isinstance(prev, ast.AnnAssign)
            and isinstance(prev.target, ast.Name)
            and isinstance(node, ast.Expr)
            and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)
        ):
            docs[prev.target.id] = node.value.value
    return docs
