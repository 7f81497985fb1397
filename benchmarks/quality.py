"""How well each training-dynamics metric finds the flipped labels of the sample run.

For the training split of the sample run (sklearn digits 0-7, 10 % of labels flipped at random,
ground truth in ``is_noisy``), every metric is oriented so that higher = more suspicious:

===============  ==================================================================
``aum``          −AUM (low margin of the given label = suspicious)
``confidence``   −confidence
``correctness``  −correctness
``forgetting``   forgetting events; never-learned examples rank above every learned one
``el2n``         +EL2N
===============  ==================================================================

Next to them, in the same process and on the same examples: cleanlab's label-quality scores
(``self_confidence``, oriented 1 − score) from out-of-sample predicted probabilities, obtained by
5-fold cross-validation (a) of scikit-learn's ``LogisticRegression`` on the pixels and (b) of the
sample MLP itself (same architecture, optimiser and epochs as the run). At the end, the OOD
quality rows of ``benchmarks/quality_ood.py`` are printed when that module exists.

Usage: ``python benchmarks/quality.py [--run-dir sample_data/run] [--folds 5]``
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import schema as S  # noqa: E402
from analysis.pipeline import build_dynamics_table  # noqa: E402


def _oriented_metrics(train):  # type: ignore[no-untyped-def]
    forgetting = train[S.FORGETTING].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    never = train[S.NEVER_LEARNED].to_numpy(bool)
    top = np.nanmax(forgetting) if np.isfinite(forgetting).any() else 0.0
    forgetting = np.where(never | np.isnan(forgetting), top + 1.0, forgetting)
    return {
        "aum (−AUM)": -train[S.AUM].to_numpy(float),
        "confidence (−confidence)": -train[S.CONFIDENCE].to_numpy(float),
        "correctness (−correctness)": -train[S.CORRECTNESS].to_numpy(float),
        "forgetting (never learned ranked first)": forgetting,
        "el2n (+EL2N)": train[S.EL2N_MEAN].to_numpy(float),
    }


def _cv_logreg(x, y, folds: int, seed: int):  # type: ignore[no-untyped-def]
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    clf = LogisticRegression(max_iter=2000, C=1.0)
    return cross_val_predict(clf, x, y, cv=cv, method="predict_proba")


def _cv_mlp(x, y, folds: int, seed: int, n_epochs: int):  # type: ignore[no-untyped-def]
    import torch
    from sklearn.model_selection import StratifiedKFold

    from analysis.sample import LEARNING_RATE, make_sample_model, train_one_epoch

    probs = np.zeros((len(y), int(y.max()) + 1))
    cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    xt, yt = torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(y)
    for k, (tr, te) in enumerate(cv.split(x, y)):
        model = make_sample_model(n_classes=probs.shape[1], seed=seed + k)
        opt = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
        gen = torch.Generator().manual_seed(seed + k)
        ids = torch.as_tensor(tr)
        for epoch in range(n_epochs):
            train_one_epoch(model, opt, xt[tr], yt[tr], ids, epoch=epoch, generator=gen)
        model.eval()
        with torch.no_grad():
            probs[te] = torch.softmax(model(xt[te]), dim=1).numpy()
    return probs


def _scores_row(name: str, score, noisy, seconds: float | None = None) -> dict:  # type: ignore[no-untyped-def]
    from sklearn.metrics import average_precision_score, roc_auc_score

    k = int(noisy.sum())
    top = np.argsort(-score, kind="stable")[:k]
    return {"detector": name, "auroc": roc_auc_score(noisy, score),
            "ap": average_precision_score(noisy, score), "prec_at_k": float(noisy[top].mean()),
            "seconds": seconds}


def _markdown(rows: list[dict], columns: list[str]) -> str:
    def fmt(v):  # type: ignore[no-untyped-def]
        if v is None:
            return "—"
        if isinstance(v, float):
            return f"{v:.4f}" if abs(v) < 10 else f"{v:.1f}"
        return str(v)

    out = ["| " + " | ".join(columns) + " |", "| " + " | ".join("---" for _ in columns) + " |"]
    out += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(out)


def _ood_module():  # type: ignore[no-untyped-def]
    for name in ("quality_ood", "benchmarks.quality_ood"):
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError:
            continue
        if hasattr(mod, "ood_quality_rows"):
            return mod
    return None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", type=Path, default=ROOT / "sample_data" / "run")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ood", action="store_true", help="skip the OOD rows of quality_ood.py")
    args = p.parse_args()
    run = args.run_dir
    if not (run / S.RUN_JSON).exists():
        from analysis.sample import build_sample_run

        print(f"building the sample run in {run} ...")
        build_sample_run(run, seed=args.seed)

    from cleanlab.rank import get_label_quality_scores
    from sklearn.datasets import load_digits

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table, meta = build_dynamics_table(run)
    train = table[table[S.SPLIT] == S.TRAIN_SPLIT].reset_index(drop=True)
    if S.IS_NOISY not in train.columns:
        raise SystemExit(f"{run} has no `{S.IS_NOISY}` ground truth: use the sample run.")
    noisy = train[S.IS_NOISY].to_numpy(bool)
    labels = train[S.LABEL].to_numpy(int)
    pixels = load_digits().data[train["digits_index"].to_numpy(int)] / 16.0

    rows = [_scores_row(f"dynamics: {name}", score, noisy)
            for name, score in _oriented_metrics(train).items()]
    t0 = time.perf_counter()
    probs = _cv_logreg(pixels, labels, args.folds, args.seed)
    lr_s = time.perf_counter() - t0
    rows.append(_scores_row(f"cleanlab self_confidence, {args.folds}-fold LogisticRegression",
                            1.0 - get_label_quality_scores(labels, probs), noisy, lr_s))
    t0 = time.perf_counter()
    probs = _cv_mlp(pixels, labels, args.folds, args.seed, meta.n_epochs)
    mlp_s = time.perf_counter() - t0
    rows.append(_scores_row(f"cleanlab self_confidence, {args.folds}-fold sample MLP",
                            1.0 - get_label_quality_scores(labels, probs), noisy, mlp_s))

    print(f"run: {run} ({meta.source}, {meta.n_epochs} epochs); training split: {len(train)} "
          f"examples, {int(noisy.sum())} flipped labels ({noisy.mean():.1%})\n")
    print("Detecting flipped labels (positive class: is_noisy; every score oriented higher = more "
          "suspicious; prec@k with k = number of flipped labels; seconds: extra training the "
          "detector needs, the dynamics come free with the run):\n")
    print(_markdown(rows, ["detector", "auroc", "ap", "prec_at_k", "seconds"]))

    if not args.no_ood:
        mod = _ood_module()
        if mod is None:
            print("\n(benchmarks/quality_ood.py not found: no OOD rows)")
        else:
            ood = list(mod.ood_quality_rows(run))
            print("\nOOD detection and projection quality (benchmarks/quality_ood.py):\n")
            if hasattr(mod, "readme_table"):
                print(mod.readme_table(ood) + "\n")
            cols = list(dict.fromkeys(k for r in ood for k in r))
            print(_markdown(ood, cols))
    return 0


if __name__ == "__main__":
    sys.exit(main())
