"""`diffclust` command line: a thin layer over the library, one module per command.

`options` holds what several commands share (argument types, option groups, the default run
folder); `main` builds the parser and turns every failure into one line. Only the standard
library is imported up front, so `--help` and argument errors answer at once; torch, diffusers
and transformers load when a command runs.
"""

from diffclust.cli.fit import build_model, fit_input
from diffclust.cli.main import build_parser, configure_logging, main
from diffclust.cli.options import default_run_folder

__all__ = ["build_model", "build_parser", "configure_logging", "default_run_folder", "fit_input", "main"]
