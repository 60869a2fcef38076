"""The estimators' numpydoc docstrings, which the API reference is generated from, document every
constructor parameter, and nothing the constructor does not take."""

from __future__ import annotations

import inspect
import re

import pytest

from diffclust.methods.registry import METHODS


def documented_parameters(docstring: str) -> set[str]:
    section = docstring.split("Parameters\n    ----------\n", 1)[1].split("\n\n", 1)[0]
    names = set()
    for line in section.splitlines():
        match = re.match(r"^    ([A-Za-z_][\w, ]*?) ?(?::|$)", line)
        if match and not line.startswith("        "):
            names |= {name.strip() for name in match.group(1).split(",")}
    return names


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_constructor_parameter_is_documented_once_filled_in(method):
    estimator = METHODS[method]
    doc = estimator.__doc__
    assert "{" + "k_parameters}" not in doc and "{" + "run_parameters}" not in doc  # the shared docs were filled in
    for section in ("Parameters", "Attributes", "Examples"):
        assert f"\n    {section}\n    {'-' * len(section)}\n" in doc
    signature = {name for name in inspect.signature(estimator.__init__).parameters if name != "self"}
    assert documented_parameters(doc) == signature
