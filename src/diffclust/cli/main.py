"""The `diffclust` entry point: the parser of every command, logging, and one line for any failure."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import warnings
from pathlib import Path

from diffclust import __version__
from diffclust.cli import evaluate, features, fit, predict, pretrain, report, search

logger = logging.getLogger("diffclust")

#: command name -> its module (add_parser(commands), run(args)), in the order --help lists them
COMMANDS = {"fit": fit, "features": features, "predict": predict, "evaluate": evaluate, "report": report, "pretrain": pretrain,
            "search": search}


class OneLineParser(argparse.ArgumentParser):
    """Argument mistakes in one line, as every other error (not 48 lines of usage)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="diffclust", description="Cluster images without labels using pretrained diffusion models.")
    parser.add_argument("--version", action="version", version=f"diffclust {__version__}")
    parser.add_argument("--verbose", action="store_true", help="log debugging detail")
    parser.add_argument("--debug", action="store_true", help="on an error, print the full traceback too (or set DIFFCLUST_DEBUG=1)")
    commands = parser.add_subparsers(dest="command", required=True)
    for module in COMMANDS.values():
        module.add_parser(commands)
    for command in commands.choices.values():  # the global switches work after the command too (diffclust fit ... --verbose)
        command.add_argument("--verbose", action="store_true", default=argparse.SUPPRESS, help="log debugging detail")
        command.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="on an error, print the full traceback too")
        if not any("--quiet" in action.option_strings for action in command._actions):
            command.add_argument("--quiet", action="store_true", help="no progress bars or library loading bars")
    return parser


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever sys.stderr is at the time (pytest and notebooks swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging(verbose: bool, quiet: bool) -> None:
    """diffclust's messages on stderr, each once: one handler on the 'diffclust' logger (none on
    the root logger, where it would repeat every library's own lines), and the model
    libraries' chatter and loading bars kept down."""
    for handler in [h for h in logger.handlers if isinstance(h, _CurrentStderr)]:
        logger.removeHandler(handler)
    handler = _CurrentStderr()
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    for noisy in ("diffusers", "transformers", "accelerate", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING if verbose else logging.ERROR)
    if quiet:  # read by huggingface_hub, transformers and diffusers when they are first imported
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    warnings.showwarning = _warning_as_one_line


def _warning_as_one_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A library's warning on the command line: one line through diffclust's log, without the
    site-packages path and source line Python would print (the library and category say enough)."""
    parts = Path(filename).parts if filename else ()
    installed = [index for index, part in enumerate(parts[:-1]) if part in ("site-packages", "dist-packages")]
    package = f"{parts[installed[-1] + 1]} " if installed else ""  # 'sklearn UserWarning: ...'
    logger.warning("%s%s: %s", package, category.__name__, " ".join(str(message).split()))



#: options whose values may start with '-' (argparse would read '-3:5' as an option and say "expected one argument")
DASH_VALUE_OPTIONS = ("--k-range", "--timestep-range")



def _join_dash_values(argv: list[str]) -> list[str]:
    """'--k-range -3:5' -> '--k-range=-3:5', so the value reaches its own check and error."""
    joined, index = [], 0
    while index < len(argv):
        if argv[index] in DASH_VALUE_OPTIONS and index + 1 < len(argv) and argv[index + 1].startswith("-") and argv[index + 1][1:2].isdigit():
            joined.append(f"{argv[index]}={argv[index + 1]}")
            index += 2
        else:
            joined.append(argv[index])
            index += 1
    return joined


def resolve_builtin_data(args) -> None:
    """Built-in data names (`diffclust fit usps`) become their folder before a command runs, so
    every command reads them as it reads a user's folder."""
    from diffclust.datasets import resolve_data

    data = getattr(args, "data", None)
    if isinstance(data, list):
        args.data = [resolve_data(item) for item in data]
    elif data is not None:
        args.data = resolve_data(data)
    if args.command == "evaluate" and args.labels is not None:
        args.labels = resolve_data(args.labels)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(_join_dash_values(list(sys.argv[1:] if argv is None else argv)))
    configure_logging(args.verbose, getattr(args, "quiet", False))
    try:
        resolve_builtin_data(args)
        return COMMANDS[args.command].run(args)
    except (Exception, KeyboardInterrupt) as error:  # every failure ends in one line (and a traceback only with --debug)
        from diffclust.failures import debug_requested, explain

        message, code = explain(error, args.command, args)
        if debug_requested(args):
            import traceback

            traceback.print_exc()
        print(f"diffclust {args.command}: error: {message}", file=sys.stderr)
        return code
