"""User-facing errors: each says what was wrong and what to do about it."""

import re


class DiffclustError(ValueError):
    """A problem with the user's input or settings (not a bug in diffclust)."""

    #: the command line's exit code: 2 for a mistake the user can correct
    exit_code = 2


class EnvironmentProblem(DiffclustError):
    """The machine, not the input, stopped the work (a full disk, an unusable home folder)."""

    exit_code = 1


class DiskFullError(EnvironmentProblem):
    """A write failed because its disk is full; what was there before is intact."""


class BackboneNotFoundError(DiffclustError):
    """A backbone name, folder or hub id could not be loaded."""


#: settings whose command-line flag is not simply --name-with-dashes
_FLAGS = {"n_clusters": "--k", "random_state": "--seed", "feature_timestep": "--t-hat", "mask_timestep": "--t-tilde",
          "output_dir": "--out", "data": "DATA or --features", "layer_": "--layer, or the search's search.json",
          "timestep_": "--timestep, or the search's search.json"}


def setting_label(name: str) -> str:
    """A setting as users know it in both the API and the CLI: 'random_state (--seed)'."""
    return f"{name} ({_FLAGS.get(name, '--' + name.replace('_', '-'))})"


#: advice a library gives that diffclust never passes on: loading a file as a pickle runs its code
_UNSAFE_ADVICE = ("allow_pickle", "weights_only", "trust_remote_code")


def library_reason(error: BaseException, limit: int = 200) -> str:
    """A library's error about a file as one line for diffclust's own message: its type and text,
    without the sentences that advise unpickling the file."""
    sentences = re.split(r"(?<=[.;])\s+", " ".join(str(error).split()))
    kept = " ".join(sentence for sentence in sentences if not any(advice in sentence for advice in _UNSAFE_ADVICE))
    return f"{type(error).__name__}: {kept[:limit]}".rstrip(": ")
