"""Synthetic runs of any size, for benchmarks and scale tests.

The generated run is a valid run directory with believable structure: class-clustered features,
a fraction of flipped labels whose gold probability stays low, ambiguous examples whose gold
probability oscillates, and optional held-out (OOD) splits far from the class means.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from analysis import runstore
from analysis import schema as S

__all__ = ["make_synthetic_run"]


def make_synthetic_run(
    run_dir: str | os.PathLike[str],
    *,
    n_examples: int = 10_000,
    n_epochs: int = 10,
    n_classes: int = 10,
    n_features: int = 32,
    n_eval: int = 0,
    noise_rate: float = 0.1,
    keep_logits: bool = False,
    seed: int = 0,
) -> Path:
    """Write a synthetic run with compact dynamics (and features/logits when ``n_eval > 0``).

    Parameters
    ----------
    n_examples : int
        Training examples (rows with dynamics).
    n_eval : int
        Size of each evaluation split (``test`` and ``ood:far``) with features and final logits;
        0 writes none.
    noise_rate : float
        Fraction of training labels flipped (ground truth in ``is_noisy``).
    keep_logits : bool
        Also store the full per-epoch logits (large).
    """
    rng = np.random.default_rng(seed)
    run = Path(run_dir)
    run.mkdir(parents=True, exist_ok=True)
    true = rng.integers(0, n_classes, n_examples)
    noisy = rng.random(n_examples) < noise_rate
    label = true.copy()
    shift = rng.integers(1, n_classes, n_examples)
    label[noisy] = (true[noisy] + shift[noisy]) % n_classes
    ids = np.arange(n_examples, dtype=np.int64)
    difficulty = rng.beta(2, 5, n_examples).astype(np.float32)  # 0 easy .. 1 hard
    ambiguous = rng.random(n_examples) < 0.15

    runstore.save_run_meta(run, runstore.RunMeta(
        class_names=[f"class_{k}" for k in range(n_classes)], n_epochs=n_epochs,
        source=S.SOURCE_SYNTHETIC, task="synthetic"))
    examples = pd.DataFrame({
        S.EXAMPLE_ID: ids, S.SPLIT: S.TRAIN_SPLIT, S.LABEL: label,
        S.LABEL_NAME: np.array([f"class_{k}" for k in range(n_classes)], dtype=object)[label],
        S.TEXT: pd.Series([f"synthetic example {i}" for i in range(n_examples)]) if n_examples <= 200_000 else None,
        S.IS_NOISY: noisy, S.ORIGINAL_LABEL: true,
    })
    if n_examples > 200_000:
        examples = examples.drop(columns=[S.TEXT])

    means = rng.normal(0, 3, (n_classes, n_features)).astype(np.float32)
    if n_eval:
        eval_ids = np.arange(n_examples, n_examples + 2 * n_eval, dtype=np.int64)
        eval_true = rng.integers(0, n_classes, n_eval)
        ex_eval = pd.DataFrame({
            S.EXAMPLE_ID: eval_ids,
            S.SPLIT: [S.SPLIT and "test"] * n_eval + ["ood:far"] * n_eval,
            S.LABEL: pd.array(list(eval_true) + [pd.NA] * n_eval, dtype="Int64"),
            S.IS_OOD: [False] * n_eval + [True] * n_eval,
        })
        examples = pd.concat([examples, ex_eval], ignore_index=True)
    runstore.save_examples(run, examples)

    for e in range(n_epochs):
        progress = (e + 1) / n_epochs
        # Gold probability: rises with training for clean examples, stays low for flipped ones,
        # oscillates for ambiguous ones.
        base = np.where(noisy, 0.1 * progress, np.minimum(1.0, 2.5 * progress) * (1 - 0.8 * difficulty))
        osc = np.where(ambiguous, 0.35 * np.sin(e * 1.7 + ids % 7), 0.0)
        gp = np.clip(base + osc + rng.normal(0, 0.04, n_examples), 1e-4, 1 - 1e-4).astype(np.float32)
        margin = np.log(gp / (1 - gp)).astype(np.float32) + rng.normal(0, 0.1, n_examples).astype(np.float32)
        pred = np.where(margin > 0, label, (label + 1) % n_classes).astype(np.int32)  # as its margin says
        cols = {
            S.EXAMPLE_ID: pa.array(ids), S.EPOCH: pa.array(np.full(n_examples, e, np.int32)),
            S.GOLD_PROB: pa.array(gp), S.MARGIN: pa.array(margin), S.PRED: pa.array(pred),
            S.LOSS: pa.array(-np.log(gp)), S.EL2N: pa.array(np.float32(np.sqrt(2)) * (1 - gp)),
        }
        if keep_logits:
            z = rng.normal(0, 1, (n_examples, n_classes)).astype(np.float64)
            z[np.arange(n_examples), label] += 3 * gp
            cols[S.LOGITS] = pa.FixedSizeListArray.from_arrays(pa.array(z.reshape(-1)), n_classes)
        runstore.save_dynamics(run, pa.table(cols), shard=f"epoch-{e:04d}")

    if n_eval:
        feats_train = means[true] + rng.normal(0, 1, (n_examples, n_features)).astype(np.float32)
        runstore.save_features(run, S.TRAIN_SPLIT, ids, feats_train)
        feats_test = means[eval_true] + rng.normal(0, 1, (n_eval, n_features)).astype(np.float32)
        feats_ood = rng.normal(0, 1, (n_eval, n_features)).astype(np.float32) * 4 + 8
        w = means.T / (np.linalg.norm(means, axis=1) ** 2)
        for split, fid, f in (("train", ids, feats_train), ("test", eval_ids[:n_eval], feats_test),
                              ("ood:far", eval_ids[n_eval:], feats_ood)):
            if split != "train":
                runstore.save_features(run, split, fid, f)
            runstore.save_logits(run, split, fid, (f @ w * 6).astype(np.float32))
    return run
