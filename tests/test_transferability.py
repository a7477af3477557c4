"""Transferability scores against direct implementations written from the papers' formulas, and their properties."""
from __future__ import annotations

import math

import numpy as np
import pytest

from tfp_mlflow import BadInputError
from tfp_mlflow.transferability import (
    FEATURE_SCORES,
    SCORES,
    cc_fv,
    gbc,
    hscore,
    leep,
    logme,
    nce,
    score,
    shrinkage_hscore,
)


def _data(seed=0, n=60, d=8, classes=3, separation=2.0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    centres = rng.normal(size=(classes, d)) * separation
    return centres[labels] + rng.normal(size=(n, d)), labels


def _softmax(logits):
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_leep_and_nce_match_their_definitions_computed_sample_by_sample():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, 40)
    theta = _softmax(rng.normal(size=(40, 5)) + 2 * np.eye(5)[labels])
    joint = np.zeros((3, 5))
    for i in range(40):
        for z in range(5):
            joint[labels[i], z] += theta[i, z] / 40
    conditional = joint / joint.sum(axis=0)
    direct = np.mean([math.log(sum(conditional[labels[i], z] * theta[i, z] for z in range(5))) for i in range(40)])
    assert leep(theta, labels) == pytest.approx(direct)
    hard = theta.argmax(axis=1)
    pairs = {}
    for y, z in zip(labels, hard):
        pairs[(y, z)] = pairs.get((y, z), 0) + 1 / 40
    pz = {z: sum(v for (_, zz), v in pairs.items() if zz == z) for z in set(hard)}
    assert nce(theta, labels) == pytest.approx(sum(p * math.log(p / pz[z]) for (_, z), p in pairs.items()))


def test_hscore_and_its_shrinkage_version_match_matrix_formulas():
    from sklearn.covariance import ledoit_wolf

    f, y = _data(1)
    centred = f - f.mean(axis=0)
    between = np.array([centred[y == y[i]].mean(axis=0) for i in range(len(y))])
    expected = np.trace(np.linalg.pinv(np.cov(centred.T)) @ np.cov(between.T))
    assert hscore(f, y) == pytest.approx(expected, rel=1e-8)
    shrunk, a = ledoit_wolf(centred, assume_centered=True)
    assert shrinkage_hscore(f, y) == pytest.approx(np.trace(np.linalg.inv(shrunk) @ ((1 - a) * np.cov(between.T))),
                                                   rel=1e-8)


def test_logme_matches_the_evidence_of_the_bayesian_regression_written_with_matrices():
    f, y = _data(2, n=50, d=6)
    n, d = f.shape
    evidences = []
    for k in range(3):
        t = (y == k).astype(float)
        alpha, beta = 1.0, 1.0
        for _ in range(11):            # MacKay's updates, with the posterior written out
            a = alpha * np.eye(d) + beta * f.T @ f
            m = beta * np.linalg.solve(a, f.T @ t)
            gamma = np.sum(np.linalg.eigvalsh(beta * f.T @ f) / np.linalg.eigvalsh(a))
            old = alpha / beta
            alpha, beta = gamma / (m @ m + 1e-5), (n - gamma) / (np.sum((f @ m - t) ** 2) + 1e-5)
            if abs(alpha / beta - old) / old <= 1e-3:
                break
        a = alpha * np.eye(d) + beta * f.T @ f
        m = beta * np.linalg.solve(a, f.T @ t)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - np.linalg.slogdet(a)[1] / 2
                    - beta / 2 * np.sum((f @ m - t) ** 2) - alpha / 2 * m @ m - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    assert logme(f, y) == pytest.approx(np.mean(evidences), rel=1e-6)


def test_gbc_matches_the_bhattacharyya_formula_with_full_matrices():
    f, y = _data(4, d=5)
    total = 0.0
    for i in range(3):
        for j in range(3):
            if i != j:
                si, sj = np.diag(f[y == i].var(axis=0) + 1e-6), np.diag(f[y == j].var(axis=0) + 1e-6)
                s = (si + sj) / 2
                delta = f[y == i].mean(axis=0) - f[y == j].mean(axis=0)
                distance = delta @ np.linalg.inv(s) @ delta / 8 + 0.5 * np.log(
                    np.linalg.det(s) / np.sqrt(np.linalg.det(si) * np.linalg.det(sj)))
                total += np.exp(-distance)
    assert gbc(f, y) == pytest.approx(-total)


def test_cc_fv_matches_its_formulas_with_full_covariances_and_pairwise_energies():
    import scipy.linalg

    f, y = _data(8, n=60, d=4)
    rng = np.random.default_rng(0)                  # the grouping cc_fv draws with seed 0: per class, in order
    distances = []
    for k in range(3):
        members = f[rng.permutation(np.flatnonzero(y == k))]
        groups = np.array_split(members, 2)
        for i in range(2):
            for j in range(2):
                if i != j:
                    si, sj = np.diag(groups[i].std(axis=0) ** 2), np.diag(groups[j].std(axis=0) ** 2)
                    w2 = (np.sum((groups[i].mean(axis=0) - groups[j].mean(axis=0)) ** 2) + np.trace(si)
                          + np.trace(sj) - 2 * np.trace(scipy.linalg.sqrtm(si @ sj)).real)   # paper's eq. (1)
                    distances.append(np.sqrt(w2))
    consistency = np.mean(distances)                                                     # eq. (2)
    v = f / np.linalg.norm(f, axis=1, keepdims=True)
    energy = np.mean([1 / np.linalg.norm(v[i] - v[j]) for i in range(len(v)) for j in range(len(v)) if i != j])
    assert cc_fv(f, y) == pytest.approx(np.log((1 / energy) / consistency), rel=1e-9)   # eqs. (3)-(5), s = 1


@pytest.mark.parametrize("name", FEATURE_SCORES)
def test_separable_labels_score_higher_than_shuffled_ones(name):
    f, y = _data(5, n=90, d=10, separation=3.0)
    shuffled = np.random.default_rng(0).permutation(y)
    assert score(name, y, features=f) > score(name, shuffled, features=f)


@pytest.mark.parametrize("name", ["leep", "nce"])
def test_a_source_head_that_predicts_the_labels_scores_higher(name):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 80)
    informative = _softmax(3 * np.eye(4)[labels] + rng.normal(size=(80, 4)))
    uninformative = _softmax(rng.normal(size=(80, 4)))
    assert score(name, labels, probabilities=informative) > score(name, labels, probabilities=uninformative)


def test_bad_inputs_are_clear_errors():
    f, y = _data(7)
    with pytest.raises(BadInputError, match="unknown transferability score 'fid'"):
        score("fid", y, features=f)
    with pytest.raises(BadInputError, match="at least two classes"):
        logme(f, np.zeros(len(f), dtype=int))
    with pytest.raises(BadInputError, match="3 samples for 3 classes"):
        logme(f[:3], y[:3])
    with pytest.raises(BadInputError, match="rows summing to 1"):
        leep(np.ones((len(y), 3)), y)
    with pytest.raises(BadInputError, match="finite"):
        hscore(np.full_like(f, np.nan), y)
    with pytest.raises(BadInputError, match="reads the model's probabilities"):
        score("nce", y, features=f)
    assert set(SCORES) == {"logme", "leep", "nce", "nleep", "hscore", "shrinkage-hscore", "gbc", "cc-fv"}
    with pytest.raises(BadInputError, match="at least 4 images in some class"):
        cc_fv(f[:6], np.array([0, 0, 0, 1, 1, 1]))
