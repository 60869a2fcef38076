"""The estimators are scikit-learn clusterers: clone, tags, repr, pipelines, random_state, and
scikit-learn's own estimator checks (with the few that cannot apply listed, and why)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone, is_clusterer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import check_estimator

from diffclust import CLUDI, DiEC, DiFiC
from diffclust.cli import build_model, build_parser
from diffclust.cluster.metrics import hungarian_accuracy

#: a CLUDI small enough for scikit-learn's ~50 checks, each of which fits on tiny data (a k-means start:
#: the consensus start, with its spectral candidates, has its own tests)
#: the protocol checks fit dozens of times: the published random start skips the start's copy (tested in test_cludi.py)
CHECK_SETTINGS = dict(epochs=2, batch_size=16, hidden_dim=32, embedding_dim=8, teacher_steps=2, predict_samples=2,
                      predict_steps=2, monitor_samples=1, init_steps=30, lr=1e-3, device="cpu", progress=False, init="random")

ONE_CLUSTER = "the check sets n_clusters=1 first; diffclust refuses K < 2 with a clear error (one cluster is no clustering)"
#: scikit-learn checks that cannot apply to CLUDI, and why (each must really fail: see the test)
CLUDI_CHECKS_THAT_CANNOT_APPLY = {
    "check_dont_overwrite_parameters": ONE_CLUSTER,
    "check_methods_subset_invariance": ONE_CLUSTER,
    "check_fit2d_1sample": ONE_CLUSTER,
    "check_fit2d_1feature": ONE_CLUSTER,
    "check_fit2d_predict1d": ONE_CLUSTER,
    "check_methods_sample_order_invariance": (
        "CLUDI predicts by sampling with one seeded noise stream over the rows in order, so a row's sampled logits (what "
        "transform returns) depend on its position; the clusters are stable, the raw logits are not bitwise equal"),
}

#: checks of the estimator protocol that need no fit; the only ones that apply to DiFiC and DiEC,
#: which cluster images (folders, files, PIL images, image arrays), not the 2-D matrices the other checks feed
PROTOCOL_CHECKS = ("check_estimator_cloneable", "check_estimator_tags_renamed", "check_valid_tag_types", "check_estimator_repr",
                   "check_no_attributes_set_in_init", "check_do_not_raise_errors_in_init_or_set_params", "check_mixin_order",
                   "check_parameters_default_constructible", "check_get_params_invariance", "check_set_params")


@pytest.mark.parametrize("estimator", [DiFiC, DiEC, CLUDI])
def test_estimators_are_scikit_learn_clusterers(estimator):
    model = estimator(5, epochs=3)
    assert is_clusterer(model)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params()
    assert repr(model) == f"{estimator.__name__}(epochs=3, n_clusters=5)"  # only the changed settings
    assert model.__sklearn_tags__().input_tags.two_d_array is (estimator is CLUDI)
    assert model.set_params(random_state=7).random_state == 7


@pytest.mark.parametrize("estimator", [DiFiC, DiEC])
@pytest.mark.parametrize("check", PROTOCOL_CHECKS)
def test_image_estimators_pass_the_protocol_checks(estimator, check):
    getattr(estimator_checks, check)(estimator.__name__, estimator(4, epochs=2))


def test_cludi_passes_scikit_learns_estimator_checks():
    results = check_estimator(CLUDI(3, **CHECK_SETTINGS), expected_failed_checks=CLUDI_CHECKS_THAT_CANNOT_APPLY, on_fail=None,
                              on_skip=None)
    by_status = {}
    for result in results:
        by_status.setdefault(result["status"], set()).add(result["check_name"])
    assert by_status.get("failed", set()) == set(), [repr(r["exception"])[:300] for r in results if r["status"] == "failed"]
    assert by_status["xfail"] == set(CLUDI_CHECKS_THAT_CANNOT_APPLY)  # the list stays honest: each really fails
    assert {"check_clustering", "check_estimators_pickle", "check_n_features_in_after_fitting",
            "check_fit_idempotent"} <= by_status["passed"]
    assert len(by_status["passed"]) >= 40


def test_cludi_in_a_pipeline_clusters_blobs():
    rng = np.random.default_rng(0)
    labels = np.arange(300) % 3
    features = (rng.normal(size=(3, 8)) * 6)[labels] + rng.normal(size=(300, 8))
    pipeline = make_pipeline(StandardScaler(), CLUDI(3, **{**CHECK_SETTINGS, "init": "kmeans", "batch_size": 64, "epochs": 3, "init_steps": 200,
                                                              "teacher_steps": 5, "predict_steps": 5}))
    assert hungarian_accuracy(labels, pipeline.fit_predict(features)) >= 0.99
    assert np.array_equal(pipeline.predict(features), pipeline[-1].labels_)
    assert pipeline[-1].n_features_in_ == 8


def test_seed_on_the_command_line_is_random_state_in_the_api(tmp_path):
    parse = build_parser().parse_args
    assert build_model(parse(["fit", "d", "--k", "3", "--seed", "4"]), tmp_path).random_state == 4
    assert build_model(parse(["fit", "d", "--k", "3", "--random-state", "5", "--method", "diec"]), tmp_path).random_state == 5
    assert DiFiC.from_settings({"n_clusters": 3, "seed": 9}).random_state == 9  # configs saved before the rename


def test_a_bad_random_state_is_named():
    with pytest.raises(ValueError, match=r"random_state \(--seed\) must be an integer >= 0, got -1"):
        CLUDI(3, random_state=-1).fit(np.zeros((10, 2)))
