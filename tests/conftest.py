"""Shared fixtures: small real training runs on scikit-learn's bundled digits."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_logged_logits() -> dict[str, np.ndarray]:
    """Per-epoch logits of a real softmax-regression model trained on the digits.

    Trained with plain NumPy full-batch gradient descent on standardised pixels, with 15% of the
    labels flipped so that the data map has hard-to-learn examples. Returns
    ``logits (n_epochs, n_examples, 10)``, ``labels``, ``true_labels``.
    """
    from sklearn.datasets import load_digits

    x, y_true = load_digits(return_X_y=True)
    x = (x - x.mean(0)) / (x.std(0) + 1e-6)
    rng = np.random.default_rng(0)
    y = y_true.copy()
    flip = rng.random(len(y)) < 0.15
    y[flip] = (y[flip] + rng.integers(1, 10, flip.sum())) % 10
    w = np.zeros((x.shape[1], 10))
    b = np.zeros(10)
    logits = []
    for _epoch in range(8):
        for _step in range(5):
            z = x @ w + b
            p = np.exp(z - z.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            p[np.arange(len(y)), y] -= 1
            w -= 0.05 * x.T @ p / len(y)
            b -= 0.05 * p.mean(0)
        logits.append(x @ w + b)
    return {"logits": np.stack(logits), "labels": y, "true_labels": y_true}
