"""Transferability scores: how well a pretrained model suits a labelled target, before any fine-tuning.

Each score takes the target's labels (integers 0..C-1) and either the model's penultimate features
(``features``, shape (n, d): LogME, N-LEEP, H-score, shrinkage H-score, GBC, CC-FV) or its source-head class
probabilities (``probabilities``, shape (n, Z), rows summing to 1: LEEP, NCE). Higher is better for every score.
Numpy and scikit-learn only, torch-free. Chaves et al. (MICCAI 2023) found none of them reliable across medical
tasks; ``tfp rank-models`` shows them next to the cloud's evidence, not instead of it.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np

from tfp_mlflow.errors import BadInputError

__all__ = ["SCORES", "FEATURE_SCORES", "PROBABILITY_SCORES", "logme", "leep", "nce", "nleep", "hscore",
           "shrinkage_hscore", "gbc", "cc_fv", "score"]


def _labels(labels, n: int) -> tuple[np.ndarray, int]:
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) != n:
        raise BadInputError(f"labels must be a vector of {n} class indices, got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer) or labels.min(initial=0) < 0:
        raise BadInputError("labels must be non-negative integer class indices")
    classes = int(labels.max()) + 1
    if len(np.unique(labels)) < 2:
        raise BadInputError("a transferability score needs at least two classes among the labels")
    if n < 2 * len(np.unique(labels)):
        raise BadInputError(f"{n} samples for {len(np.unique(labels))} classes: a transferability score needs at "
                            f"least two labelled images per class; raise --samples or use more images")
    return labels.astype(int), classes


def _features(features) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2 or not np.isfinite(features).all():
        raise BadInputError(f"features must be a finite (n, d) array with n >= 2, got shape {features.shape}")
    return features


def _probabilities(probabilities) -> np.ndarray:
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or not np.isfinite(probabilities).all() or (probabilities < 0).any() or \
            not np.allclose(probabilities.sum(axis=1), 1.0, atol=1e-4):
        raise BadInputError("probabilities must be an (n, Z) array of non-negative rows summing to 1 (softmax "
                            "outputs of the source head)")
    return probabilities


def logme(features, labels) -> float:
    """LogME (You et al., ICML 2021): mean over classes of the maximised log evidence per sample of a Bayesian
    linear regression from features to the one-hot label column, with prior precision alpha and noise precision
    beta fitted by MacKay's fixed-point iteration."""
    f = _features(features)
    y, classes = _labels(labels, len(f))
    n, d = f.shape
    u, s, _ = np.linalg.svd(f, full_matrices=False)
    sigma = s ** 2                                              # nonzero eigenvalues of F^T F (d - r more are 0)
    evidences = []
    for k in range(classes):
        target = (y == k).astype(np.float64)
        x2 = (u.T @ target) ** 2
        outside = max(float(target @ target - x2.sum()), 0.0)   # energy of y outside the span of the features
        alpha, beta = 1.0, 1.0
        for _ in range(11):
            t = alpha / beta
            gamma = float((sigma / (sigma + t)).sum())
            m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
            res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + outside
            alpha, beta = gamma / (m2 + 1e-5), (n - gamma) / (res2 + 1e-5)
            if abs(alpha / beta - t) / t <= 1e-3:
                break
        t = alpha / beta
        m2 = float((sigma * x2 / (t + sigma) ** 2).sum())
        res2 = float((x2 / (1 + sigma / t) ** 2).sum()) + outside
        log_det = float(np.log(alpha + beta * sigma).sum()) + (d - len(sigma)) * np.log(alpha)
        evidence = (d / 2 * np.log(alpha) + n / 2 * np.log(beta) - log_det / 2 - beta / 2 * res2 - alpha / 2 * m2
                    - n / 2 * np.log(2 * np.pi))
        evidences.append(evidence / n)
    return float(np.mean(evidences))


def leep(probabilities, labels) -> float:
    """LEEP (Nguyen et al., ICML 2020): mean log-likelihood of the target labels under the source head's
    probabilities composed with the empirical conditional P(y | z) of target label given source class."""
    theta = _probabilities(probabilities)
    y, classes = _labels(labels, len(theta))
    joint = np.zeros((classes, theta.shape[1]))
    np.add.at(joint, y, theta)
    joint /= len(theta)
    conditional = joint / np.maximum(joint.sum(axis=0, keepdims=True), 1e-20)       # P(y | z)
    return float(np.mean(np.log(np.maximum((theta * conditional[y]).sum(axis=1), 1e-20))))


def nce(probabilities, labels) -> float:
    """NCE (Tran et al., ICCV 2019): the negative conditional entropy -H(Y | Z) of the target labels given the
    source head's hard predictions Z = argmax."""
    theta = _probabilities(probabilities)
    y, classes = _labels(labels, len(theta))
    z = theta.argmax(axis=1)
    joint = np.zeros((classes, theta.shape[1]))
    np.add.at(joint, (y, z), 1.0)
    joint /= len(theta)
    marginal = joint.sum(axis=0, keepdims=True)
    mask = joint > 0
    return float((joint[mask] * np.log(joint[mask] / np.broadcast_to(marginal, joint.shape)[mask])).sum())


def nleep(features, labels, *, components: int | None = None, variance: float = 0.8, seed: int = 0) -> float:
    """N-LEEP (Li et al., CVPR 2021): LEEP with the source head replaced by a Gaussian mixture fitted to the
    features after PCA keeping ``variance`` of their variance; ``components`` defaults to the number of classes."""
    from sklearn.decomposition import PCA
    from sklearn.mixture import GaussianMixture

    f = _features(features)
    y, classes = _labels(labels, len(f))
    reduced = PCA(n_components=variance, svd_solver="full", random_state=seed).fit_transform(f) \
        if f.shape[1] > 1 else f
    mixture = GaussianMixture(n_components=components or classes, covariance_type="full", reg_covar=1e-4,
                              random_state=seed).fit(reduced)
    return leep(mixture.predict_proba(reduced), y)


def hscore(features, labels) -> float:
    """H-score (Bao et al., ICIP 2019): tr(cov(f)^+ cov(E[f | y])), inter-class variance against redundancy."""
    f = _features(features)
    y, _ = _labels(labels, len(f))
    f = f - f.mean(axis=0)
    cov_f = np.cov(f, rowvar=False)
    return float(np.trace(np.linalg.pinv(cov_f, rcond=1e-15) @ np.cov(_class_means(f, y), rowvar=False)))


def shrinkage_hscore(features, labels) -> float:
    """Regularised H-score (Ibrahim et al., ECML PKDD 2022): the feature covariance replaced by its Ledoit-Wolf
    shrinkage estimate (1 - a) cov + a mu I, and the class-mean covariance scaled by (1 - a)."""
    from sklearn.covariance import LedoitWolf

    f = _features(features)
    y, _ = _labels(labels, len(f))
    f = f - f.mean(axis=0)
    shrunk = LedoitWolf(assume_centered=True).fit(f)
    between = (1 - shrunk.shrinkage_) * np.cov(_class_means(f, y), rowvar=False)
    return float(np.trace(np.linalg.pinv(shrunk.covariance_, rcond=1e-15) @ between))


def gbc(features, labels, *, dimensions: int = 64, seed: int = 0) -> float:
    """GBC (Pándy et al., CVPR 2022), diagonal variant: minus the sum over ordered class pairs of the
    Bhattacharyya coefficient between per-class Gaussians, after PCA to ``dimensions``; near 0 = well separated."""
    from sklearn.decomposition import PCA

    f = _features(features)
    y, classes = _labels(labels, len(f))
    keep = min(dimensions, f.shape[1], len(f))
    reduced = PCA(n_components=keep, random_state=seed).fit_transform(f) if keep < f.shape[1] else f
    means, variances = [], []
    for k in range(classes):
        members = reduced[y == k]
        if len(members) == 0:
            continue
        means.append(members.mean(axis=0))
        variances.append(members.var(axis=0) + 1e-6)
    total = 0.0
    for i in range(len(means)):
        for j in range(len(means)):
            if i != j:
                pooled = (variances[i] + variances[j]) / 2
                distance = (np.sum((means[i] - means[j]) ** 2 / pooled) / 8
                            + 0.5 * (np.sum(np.log(pooled)) - 0.5 * np.sum(np.log(variances[i]))
                                     - 0.5 * np.sum(np.log(variances[j]))))
                total += np.exp(-distance)
    return float(-total)


def cc_fv(features, labels, *, groups: int = 2, seed: int = 0) -> float:
    """CC-FV (Yang et al., MICCAI 2023), adapted from segmentation to image-level features:
    ``log(F_v / C_cons)``, higher is better.

    The paper fits a Gaussian to each class's voxel features *within* one image and compares images pairwise. An
    image here has one feature vector, so each class's images are split at random (``seed``) into ``groups``
    disjoint groups that play the images' part: **class consistency** ``C_cons = 1 / (G (G - 1)) sum_k
    sum_{i != j} W_2(F_i^k, F_j^k)``, with ``W_2`` the 2-Wasserstein distance between the groups' Gaussians, taken
    with diagonal covariances (``W_2^2 = ||mu_i - mu_j||^2 + sum (sigma_i - sigma_j)^2``: the paper's full
    covariances need a matrix square root in d = 1280 dimensions from a few dozen images). **Feature variety**
    ``F_v = 1 / E_1``, ``E_1`` the mean hyperspherical energy ``||v_i - v_j||^-1`` of the L2-normalised features
    over all pairs of images (the mean, not the sum, so that it does not grow with the number of images).
    """
    f = _features(features)
    y, classes = _labels(labels, len(f))
    rng = np.random.default_rng(seed)
    total, pairs = 0.0, 0
    for k in range(classes):
        members = f[rng.permutation(np.flatnonzero(y == k))]
        parts = [part for part in np.array_split(members, min(groups, len(members) // 2)) if len(part) >= 2] \
            if len(members) >= 4 else []
        stats = [(part.mean(axis=0), part.std(axis=0)) for part in parts]
        for i, (mean_i, std_i) in enumerate(stats):
            for j, (mean_j, std_j) in enumerate(stats):
                if i != j:
                    total += np.sqrt(np.sum((mean_i - mean_j) ** 2) + np.sum((std_i - std_j) ** 2))
                    pairs += 1
    if pairs == 0:
        raise BadInputError("CC-FV needs at least 4 images in some class (two groups of two)")
    consistency = total / pairs
    unit = f / np.maximum(np.linalg.norm(f, axis=1, keepdims=True), 1e-12)
    squared = np.maximum(np.sum(unit ** 2, axis=1)[:, None] + np.sum(unit ** 2, axis=1)[None, :]
                         - 2.0 * unit @ unit.T, 0.0)
    off = ~np.eye(len(f), dtype=bool)
    energy = float(np.mean(1.0 / np.maximum(np.sqrt(squared[off]), 1e-12)))
    return float(np.log((1.0 / energy) / max(consistency, 1e-12)))


def _class_means(f: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each sample replaced by its class's mean feature."""
    means = np.zeros((int(y.max()) + 1, f.shape[1]))
    np.add.at(means, y, f)
    counts = np.bincount(y, minlength=len(means))[:, None]
    return (means / np.maximum(counts, 1))[y]


#: name → (function, what it reads: "features" or "probabilities")
SCORES: dict[str, tuple[Callable[..., float], str]] = {
    "logme": (logme, "features"), "nleep": (nleep, "features"), "hscore": (hscore, "features"),
    "shrinkage-hscore": (shrinkage_hscore, "features"), "gbc": (gbc, "features"), "cc-fv": (cc_fv, "features"),
    "leep": (leep, "probabilities"), "nce": (nce, "probabilities")}
FEATURE_SCORES = tuple(k for k, (_, reads) in SCORES.items() if reads == "features")
PROBABILITY_SCORES = tuple(k for k, (_, reads) in SCORES.items() if reads == "probabilities")


def score(name: str, labels, *, features=None, probabilities=None) -> float:
    """The score ``name`` of :data:`SCORES` from whichever input it reads."""
    if name not in SCORES:
        raise BadInputError(f"unknown transferability score {name!r}; choose one of {', '.join(SCORES)}")
    function, reads = SCORES[name]
    data = features if reads == "features" else probabilities
    if data is None:
        raise BadInputError(f"score {name!r} reads the model's {reads}; none were given")
    return function(data, labels)
