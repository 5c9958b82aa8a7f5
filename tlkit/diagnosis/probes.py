"""Out-of-fold linear probes on the cached features: what each image's label looks like to a model
that never saw that image.

Features are standardised and reduced to at most :data:`PROBE_DIM` principal components (fitted
without labels, on every image), then a multinomial logistic regression is fitted per fold
(:func:`fit_predict`), and a k-nearest-neighbour vote is taken per fold (:func:`knn_out_of_fold`). Folds
are stratified by label and seeded; images that show the same picture (exact or near copies) stay
in one fold, so a copy never vouches for its own label. With ``fractions`` each fold's training
part is also cut to nested, stratified shares (25% within 50% within 75% ...), for learning curves.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

#: principal components kept for the probes (fewer when there are fewer images)
PROBE_DIM = 128
#: inverse regularisation strength of the logistic regression (chosen on the dev set of
#: ``bench/doctor.py calibrate-labels`` among 0.1, 0.5 and 2: the strongest regularisation ranked flips best)
PROBE_C = 0.1


@dataclass
class FoldPlan:
    """Which fold every image is held out in."""

    fold_of: np.ndarray  # int per image
    folds: int


def probe_inputs(features: torch.Tensor, max_dim: int = PROBE_DIM) -> np.ndarray:
    """Standardised features projected on their first principal components, with one common scale
    (mean variance 1 per component: the leading components keep their larger share). The components
    come from the eigenvectors of the ``D x D`` covariance (faster than an SVD of the data)."""
    x = features.float()
    x = (x - x.mean(0)) / x.std(0, unbiased=False).clamp_min(1e-6)
    dim = int(min(max_dim, x.shape[0] - 1, x.shape[1]))
    if dim < 1:
        return x.numpy()
    try:
        _, vectors = torch.linalg.eigh((x.T @ x).double())
        top = vectors[:, -dim:].flip(1)  # largest eigenvalues first
    except torch.linalg.LinAlgError:  # ill-conditioned (many repeated eigenvalues): the SVD of the data converges
        top = torch.linalg.svd(x.double(), full_matrices=False).Vh[:dim].T
    z = x @ top.float()
    return (z / z.std(0, unbiased=False).pow(2).mean().sqrt().clamp_min(1e-6)).numpy()


def plan_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> FoldPlan:
    """Stratified folds that keep each group (copies of one picture) together.

    ``folds`` is lowered to the size of the smallest class and to the number of groups when needed
    (at least 2: the caller checks that every class has 2 images); when copies leave fewer than 2
    groups the folds ignore them.
    """
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    smallest = int(np.bincount(labels)[np.unique(labels)].min())
    k = max(2, min(folds, smallest))
    fold_of = np.full(len(labels), -1, dtype=np.int64)
    n_groups = len(np.unique(groups))
    if n_groups >= k:
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(labels, labels, groups)
    elif n_groups >= 2:
        k = n_groups
        splits = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed).split(labels, labels, groups)
    else:
        splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(labels, labels)
    with warnings.catch_warnings():  # "least populated class has only n members": handled by k above
        warnings.simplefilter("ignore", UserWarning)
        for f, (_, held) in enumerate(splits):
            fold_of[held] = f
    return FoldPlan(fold_of, k)


def fit_predict(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, seed: int) -> np.ndarray:
    """Class probabilities for ``x_test`` (``n_test x n_classes``) from a probe fitted on the rest; a class
    absent from the training part gets probability 0.

    The probe is multinomial logistic regression with an L2 penalty, scikit-learn's objective with
    ``C = PROBE_C`` (mean cross-entropy + ``||W||^2 / (2 C n)``, intercept not penalised), fitted by
    full-batch L-BFGS in torch from zeros: deterministic, and 20-30x faster here than scikit-learn's
    solver for the same optimum (probabilities within 1e-3). ``seed`` is unused (kept for callers).
    """
    present = np.unique(y_train)
    probs = np.zeros((len(x_test), n_classes))
    if len(present) == 1:
        probs[:, present[0]] = 1.0
        return probs
    x = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32))
    y = torch.from_numpy(np.searchsorted(present, y_train))
    weight = torch.zeros(x.shape[1], len(present), requires_grad=True)
    bias = torch.zeros(len(present), requires_grad=True)
    penalty = 1.0 / (PROBE_C * len(x))
    optimizer = torch.optim.LBFGS([weight, bias], lr=1, max_iter=200, tolerance_grad=1e-5, tolerance_change=1e-9,
                                  history_size=20, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(x @ weight + bias, y) + 0.5 * penalty * (weight * weight).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        test = torch.from_numpy(np.ascontiguousarray(x_test, dtype=np.float32))
        probs[:, present] = torch.softmax(test @ weight + bias, dim=1).double().numpy()
    return probs


def nested_subsample(y: np.ndarray, fractions: tuple[float, ...], seed: int) -> dict[float, np.ndarray]:
    """Positions of a stratified share of ``y`` per fraction, each share inside the next larger one."""
    rng = np.random.default_rng(seed)
    order = {c: rng.permutation(np.flatnonzero(y == c)) for c in np.unique(y)}
    return {f: np.sort(np.concatenate([idx[:max(1, int(round(f * len(idx))))] for idx in order.values()]))
            for f in fractions}


def out_of_fold(x: np.ndarray, labels: np.ndarray, n_classes: int, plan: FoldPlan, *, seed: int,
                fractions: tuple[float, ...] = (1.0,)) -> dict[float, np.ndarray]:
    """Per fraction, every image's probabilities from the probe of the fold it was held out of."""
    out = {f: np.zeros((len(labels), n_classes)) for f in fractions}
    for f in range(plan.folds):
        held = np.flatnonzero(plan.fold_of == f)
        train = np.flatnonzero(plan.fold_of != f)
        shares = nested_subsample(labels[train], fractions, seed + f)
        for fraction, positions in shares.items():
            rows = train[positions]
            out[fraction][held] = fit_predict(x[rows], labels[rows], x[held], n_classes, seed)
    return out


#: neighbours that vote in :func:`knn_out_of_fold`
KNN_K = 10


def knn_out_of_fold(unit: torch.Tensor, labels: np.ndarray, n_classes: int, plan: FoldPlan, *, k: int = KNN_K,
                    block: int = 1024) -> np.ndarray:
    """Per image, the label shares among its ``k`` most similar images (cosine of ``unit`` rows) of the
    other folds, with one pseudo-vote spread evenly so no class has probability 0."""
    out = np.zeros((len(labels), n_classes))
    onehot = torch.nn.functional.one_hot(torch.from_numpy(labels), n_classes).double()
    for f in range(plan.folds):
        held = torch.from_numpy(np.flatnonzero(plan.fold_of == f))
        train = torch.from_numpy(np.flatnonzero(plan.fold_of != f))
        kk = min(k, len(train))
        for start in range(0, len(held), block):
            rows = held[start:start + block]
            top = (unit[rows] @ unit[train].T).topk(kk, dim=1).indices
            votes = onehot[train][top].sum(1) + 1.0 / n_classes
            out[rows.numpy()] = (votes / votes.sum(1, keepdim=True)).numpy()
    return out


@dataclass
class ProbeOutput:
    """Out-of-fold class probabilities: the logistic probes per share of the training part, and kNN votes."""

    linear: dict[float, np.ndarray]
    knn: np.ndarray
    plan: FoldPlan

    def blended(self, weight: float = 0.5) -> np.ndarray:
        """``(1 - weight) * linear probe + weight * kNN`` at the full training part."""
        return (1.0 - weight) * self.linear[max(self.linear)] + weight * self.knn


def probe_probabilities(features: torch.Tensor, labels: np.ndarray, groups: np.ndarray, n_classes: int, *, folds: int,
                        seed: int, fractions: tuple[float, ...] = (1.0,)) -> ProbeOutput:
    """Out-of-fold probabilities of every image (folds keep ``groups`` together)."""
    from tlkit.diagnosis.features import unit_rows

    plan = plan_folds(labels, groups, folds, seed)
    linear = out_of_fold(probe_inputs(features), labels, n_classes, plan, seed=seed, fractions=fractions)
    return ProbeOutput(linear, knn_out_of_fold(unit_rows(features), labels, n_classes, plan), plan)
