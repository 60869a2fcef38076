"""The command line's defaults are the estimators' own: `diffclust fit --method M` with no
option runs exactly what `M(n_clusters=K)` runs, so the docs state each default once."""

from __future__ import annotations

import pytest

from diffclust.cli import build_model, build_parser
from diffclust.methods.registry import METHODS

#: settings the command line sets on purpose (where the run goes, and what a terminal shows)
SET_BY_THE_COMMAND_LINE = {"output_dir", "progress"}


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_fit_option_left_alone_keeps_the_estimators_default(method, tmp_path):
    args = build_parser().parse_args(["fit", str(tmp_path), "--method", method, "--k", "3"])
    from_cli = build_model(args, tmp_path / "run").get_params()
    from_api = METHODS[method](3).get_params()
    differing = {name: (from_cli[name], from_api[name]) for name in from_api
                 if name not in SET_BY_THE_COMMAND_LINE and from_cli[name] != from_api[name]}
    assert differing == {}, f"diffclust fit --method {method} and {METHODS[method].__name__}() differ (CLI, API): {differing}"


def test_an_option_given_reaches_the_estimator(tmp_path):
    args = build_parser().parse_args(["fit", str(tmp_path), "--method", "diec", "--k", "3", "--epochs", "7", "--seed", "5"])
    params = build_model(args, tmp_path / "run").get_params()
    assert (params["epochs"], params["random_state"], params["n_clusters"]) == (7, 5, 3)


def test_paper_settings_restore_difics_reading_under_the_options_given(tmp_path):
    from diffclust.methods.difc import PAPER_SETTINGS

    parse = build_parser().parse_args
    params = build_model(parse(["fit", str(tmp_path), "--k", "3", "--paper-settings"]), tmp_path / "run").get_params()
    assert {name: params[name] for name in PAPER_SETTINGS} == PAPER_SETTINGS == {
        "head_init": "random", "neighbour_space": "proxies", "cluster_gradient_ratio": None, "size_prior": "uniform"}
    params = build_model(parse(["fit", str(tmp_path), "--k", "3", "--paper-settings", "--size-prior", "start",
                                "--cluster-gradient-ratio", "0.5"]), tmp_path / "run").get_params()
    assert (params["size_prior"], params["cluster_gradient_ratio"], params["head_init"]) == ("start", 0.5, "random")
    plain_sum = build_model(parse(["fit", str(tmp_path), "--k", "3", "--cluster-gradient-ratio", "none"]), tmp_path / "run")
    assert plain_sum.get_params()["cluster_gradient_ratio"] is None and plain_sum.get_params()["head_init"] == "manifold"
