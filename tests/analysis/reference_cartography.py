"""An independent re-statement of the original Dataset Cartography computation.

Written the way the original ``cartography/selection/train_dy_filtering.py`` computes: one example
at a time, ``torch.nn.functional.softmax`` on each epoch's logits, ``np.mean`` / ``np.std`` over the
epoch trend, correctness as a *count*, forgetfulness 1000 for never-learned examples. Used only
as a reference in tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def read_training_dynamics(log_dir: Path) -> dict:
    files = sorted(Path(log_dir).glob("dynamics_epoch_*.jsonl"))
    dyn: dict = {}
    for epoch in range(len(files)):
        with open(Path(log_dir) / f"dynamics_epoch_{epoch}.jsonl") as fh:
            for line in fh:
                rec = json.loads(line.strip())
                guid = rec["guid"]
                if guid not in dyn:
                    dyn[guid] = {"gold": rec["gold"], "logits": []}
                dyn[guid]["logits"].append(rec[f"logits_epoch_{epoch}"])
    return dyn


def compute_forgetfulness(correctness_trend: list) -> int:
    if not any(correctness_trend):
        return 1000
    learnt = False
    times_forgotten = 0
    for is_correct in correctness_trend:
        if (not learnt and not is_correct) or (learnt and is_correct):
            continue
        elif learnt and not is_correct:
            learnt = False
            times_forgotten += 1
        elif not learnt and is_correct:
            learnt = True
    return times_forgotten


def compute_train_dy_metrics(training_dynamics: dict) -> dict:
    import torch

    out = {}
    for guid, record in training_dynamics.items():
        correctness_trend, true_probs_trend = [], []
        for epoch_logits in record["logits"]:
            probs = torch.nn.functional.softmax(torch.Tensor(epoch_logits), dim=-1)
            true_probs_trend.append(float(probs[record["gold"]]))
            correctness_trend.append(bool(np.argmax(epoch_logits) == record["gold"]))
        out[guid] = {
            "confidence": np.mean(true_probs_trend),
            "variability": np.std(true_probs_trend),
            "correctness": sum(correctness_trend),
            "forgetfulness": compute_forgetfulness(correctness_trend),
        }
    return out


def reference_loop_from_logits(logits: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Per-example Python loop on in-memory logits ``(n_epochs, n_examples, n_classes)``."""
    n_epochs, n = logits.shape[:2]
    conf = np.empty(n)
    var = np.empty(n)
    corr = np.empty(n)
    for i in range(n):
        trend = []
        correct = 0
        for e in range(n_epochs):
            z = logits[e, i]
            p = np.exp(z - z.max())
            p /= p.sum()
            trend.append(p[labels[i]])
            correct += int(np.argmax(z) == labels[i])
        conf[i] = np.mean(trend)
        var[i] = np.std(trend)
        corr[i] = correct
    return {"confidence": conf, "variability": var, "correctness": corr}
