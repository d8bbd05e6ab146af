"""How well a latent space recovers known ground truth (simulated data)."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


def conformation_r2(z: np.ndarray, conf: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated R^2 of a linear map z -> conf (on the particles with a conformation)."""
    ok = np.isfinite(conf)
    pred = cross_val_predict(LinearRegression(), z[ok], conf[ok], cv=_kfold(folds, seed))
    y = conf[ok]
    return float(1 - np.sum((y - pred) ** 2) / np.sum((y - y.mean()) ** 2))


def state_accuracy(z: np.ndarray, state: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated accuracy of logistic regression z -> discrete state (non-junk only)."""
    ok = state >= 0
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(clf, z[ok], state[ok], cv=cv)
    return float(np.mean(pred == state[ok]))


def junk_auc(z: np.ndarray, is_junk: np.ndarray, folds: int = 5, seed: int = 0) -> float:
    """Cross-validated ROC AUC of logistic regression z -> junk."""
    y = is_junk.astype(int)
    if y.min() == y.max():
        return float("nan")
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, z, y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


def _kfold(folds, seed):
    from sklearn.model_selection import KFold

    return KFold(folds, shuffle=True, random_state=seed)
