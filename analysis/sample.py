"""The shipped sample run: scikit-learn's handwritten digits with known label noise and OOD data.

What :func:`build_sample_run` makes, deterministically from ``seed`` and offline (scikit-learn's
bundled data only):

* In-distribution classes: digits 0-7 (8 classes). 80 % of them are the ``train`` split, 20 % the
  clean ``test`` split.
* Label noise: exactly 10 % of the training labels are flipped to a different class chosen
  uniformly at random. ``is_noisy`` and ``original_label`` in ``examples.parquet`` hold the ground
  truth.
* Near OOD, split ``ood:near``: the held-out digits 8 and 9 (classes the model never sees).
* Far OOD, split ``ood:far``: patches of scikit-learn's two bundled sample photographs, converted
  to grayscale, resized to 8x8 and scaled to the digits' 0-16 range. ``is_ood`` marks both OOD
  splits.
* A small MLP (64-128-64-8) trained on CPU with Adam; :class:`~analysis.recorder.DynamicsRecorder`
  records the logits of every training step (source ``forward_pass``).
* Penultimate features (the input of the ``head`` layer) and final logits of every split, train
  included (the Mahalanobis scorers fit on the training features).
* Every example carries an ``image`` column: PNG bytes of the 8x8 image upscaled to 32x32 with
  nearest neighbour, dark ink on white (as scikit-learn's ``gray_r`` plots show digits).

Integer ids run over the splits in the order train, test, ood:near, ood:far; ``digits_index`` is
the row in :func:`sklearn.datasets.load_digits` (missing for photo patches).
"""

from __future__ import annotations

import io
import logging
import os
import shutil
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from numpy.typing import NDArray

from analysis import runstore
from analysis import schema as S

__all__ = [
    "SampleData",
    "build_sample_run",
    "image_png",
    "load_sample_data",
    "make_sample_model",
    "train_one_epoch",
]

log = logging.getLogger(__name__)

IN_CLASSES = tuple(range(8))
"""Digits the model is trained on; 8 and 9 are held out as near OOD."""
NEAR_OOD_CLASSES = (8, 9)
NOISE_RATE = 0.1
TEST_FRACTION = 0.2
N_FAR_OOD = 300
N_EPOCHS = 20
BATCH_SIZE = 32
LEARNING_RATE = 3e-3
PNG_SIZE = 32


@dataclass
class SampleData:
    """Arrays of the sample run, one entry per split (``train``, ``test``, ``ood:near``, ``ood:far``).

    Attributes
    ----------
    pixels : dict of str to ndarray of float32 (n_examples, 64)
        8x8 images flattened, values in [0, 16].
    labels : dict of str to ndarray of int64 (n_examples,)
        Label given to the model: noisy for ``train``, true for ``test``, -1 for OOD splits.
    original : dict of str to ndarray of int64 (n_examples,)
        True digit (-1 for photo patches).
    ids : dict of str to ndarray of int64 (n_examples,)
    digits_index : dict of str to ndarray of int64 (n_examples,)
        Row in ``load_digits()`` (-1 for photo patches).
    """

    pixels: dict[str, NDArray[np.float32]]
    labels: dict[str, NDArray[np.int64]]
    original: dict[str, NDArray[np.int64]]
    ids: dict[str, NDArray[np.int64]]
    digits_index: dict[str, NDArray[np.int64]]

    @property
    def splits(self) -> list[str]:
        return list(self.pixels)


def _far_ood_patches(n: int, rng: np.random.Generator) -> NDArray[np.float32]:
    """Grayscale patches of the bundled photographs, 8x8, min-max scaled to integers in [0, 16]."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    photos = [Image.fromarray(img).convert("L") for img in load_sample_images().images]
    out = np.empty((n, 64), dtype=np.float32)
    for i in range(n):
        photo = photos[i % len(photos)]
        size = int(rng.integers(16, 97))
        left = int(rng.integers(0, photo.width - size + 1))
        top = int(rng.integers(0, photo.height - size + 1))
        patch = photo.crop((left, top, left + size, top + size)).resize((8, 8), Image.Resampling.BOX)
        a = np.asarray(patch, dtype=np.float64)
        lo, hi = a.min(), a.max()
        a = (a - lo) / (hi - lo) if hi > lo else np.zeros_like(a)
        out[i] = np.round(a * 16.0).reshape(-1)
    return out


def load_sample_data(*, seed: int = 0, noise_rate: float = NOISE_RATE) -> SampleData:
    """Split the digits, flip a fraction of training labels and add the OOD splits.

    Parameters
    ----------
    seed : int
        Seed of every random choice (split, flipped labels, photo patches).
    noise_rate : float, default 0.1
        Fraction of training labels flipped (rounded to a whole number of examples).

    Returns
    -------
    SampleData
    """
    if not 0.0 <= noise_rate < 1.0:
        raise ValueError(f"Expected `noise_rate` in [0, 1), got {noise_rate!r}.")
    from sklearn.datasets import load_digits

    digits = load_digits()
    x_all = digits.data.astype(np.float32)
    y_all = digits.target.astype(np.int64)
    rng = np.random.default_rng(seed)

    in_idx = np.flatnonzero(np.isin(y_all, IN_CLASSES))
    in_idx = in_idx[rng.permutation(len(in_idx))]
    n_test = int(round(TEST_FRACTION * len(in_idx)))
    test_idx = np.sort(in_idx[:n_test])
    train_idx = np.sort(in_idx[n_test:])
    near_idx = np.flatnonzero(np.isin(y_all, NEAR_OOD_CLASSES))

    n_cls = len(IN_CLASSES)
    y_train = y_all[train_idx].copy()
    n_noisy = int(round(noise_rate * len(train_idx)))
    flip = np.sort(rng.choice(len(train_idx), size=n_noisy, replace=False))
    shift = rng.integers(1, n_cls, size=n_noisy)
    y_train[flip] = (y_train[flip] + shift) % n_cls

    far = _far_ood_patches(N_FAR_OOD, rng)
    none = np.full(N_FAR_OOD, -1, dtype=np.int64)
    pixels = {
        S.TRAIN_SPLIT: x_all[train_idx],
        "test": x_all[test_idx],
        S.OOD_SPLIT_PREFIX + "near": x_all[near_idx],
        S.OOD_SPLIT_PREFIX + "far": far,
    }
    labels = {
        S.TRAIN_SPLIT: y_train,
        "test": y_all[test_idx],
        S.OOD_SPLIT_PREFIX + "near": np.full(len(near_idx), -1, dtype=np.int64),
        S.OOD_SPLIT_PREFIX + "far": none,
    }
    original = {
        S.TRAIN_SPLIT: y_all[train_idx],
        "test": y_all[test_idx],
        S.OOD_SPLIT_PREFIX + "near": y_all[near_idx],
        S.OOD_SPLIT_PREFIX + "far": none,
    }
    digits_index = {
        S.TRAIN_SPLIT: train_idx.astype(np.int64),
        "test": test_idx.astype(np.int64),
        S.OOD_SPLIT_PREFIX + "near": near_idx.astype(np.int64),
        S.OOD_SPLIT_PREFIX + "far": none,
    }
    ids: dict[str, NDArray[np.int64]] = {}
    start = 0
    for split, px in pixels.items():
        ids[split] = np.arange(start, start + len(px), dtype=np.int64)
        start += len(px)
    return SampleData(pixels, labels, original, ids, digits_index)


def image_png(pixels: NDArray[Any], *, size: int = PNG_SIZE) -> bytes:
    """PNG bytes of one 8x8 digit-range image (values 0-16), upscaled with nearest neighbour.

    Dark ink on a white background; ``size`` is the output width and height in pixels.
    """
    from PIL import Image

    a = np.asarray(pixels, dtype=np.float64).reshape(8, 8)
    grey = np.round(255.0 - np.clip(a, 0.0, 16.0) * (255.0 / 16.0)).astype(np.uint8)
    img = Image.fromarray(grey, mode="L").resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def make_sample_model(n_classes: int = len(IN_CLASSES), *, seed: int = 0, hidden: int = 128,
                      features: int = 64) -> Any:
    """The sample MLP ``64 -> hidden -> features -> n_classes``; inputs are pixels / 16.

    Submodules are named ``fc1``, ``act1``, ``fc2``, ``act2`` (its output: the penultimate
    features) and ``head`` (the linear classifier).
    """
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict([
        ("fc1", nn.Linear(64, hidden)),
        ("act1", nn.ReLU()),
        ("fc2", nn.Linear(hidden, features)),
        ("act2", nn.ReLU()),
        ("head", nn.Linear(features, n_classes)),
    ]))


def train_one_epoch(
    model: Any,
    optimizer: Any,
    x: Any,
    y: Any,
    ids: Any,
    *,
    epoch: int,
    generator: Any,
    batch_size: int = BATCH_SIZE,
    recorder: Any = None,
) -> float:
    """One shuffled epoch of cross-entropy training; returns the mean training loss.

    Parameters
    ----------
    x : torch.Tensor (n_examples, 64)
        Model inputs (already scaled).
    y : torch.Tensor of int64 (n_examples,)
    ids : torch.Tensor of int64 (n_examples,)
        Example ids, shuffled with the batch.
    generator : torch.Generator
        Drives the shuffling (seeded: deterministic order).
    recorder : DynamicsRecorder, optional
        Fed the logits of every training step.
    """
    import torch
    import torch.nn.functional as F

    model.train()
    order = torch.randperm(len(x), generator=generator)
    total = 0.0
    for start in range(0, len(x), batch_size):
        b = order[start:start + batch_size]
        xb, yb, ib = x[b], y[b], ids[b]  # a data loader yields the ids whether or not we record
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if recorder is not None:
            recorder.update(ib, logits, yb, epoch=epoch)
        total += float(loss.detach()) * len(b)
    return total / len(x)


def _nullable(values: NDArray[np.int64]) -> Any:
    """Nullable Int64 array with -1 as missing."""
    return pd.array([int(v) if v >= 0 else None for v in values], dtype="Int64")


def _examples_frame(data: SampleData) -> pd.DataFrame:
    names = [str(k) for k in IN_CLASSES]
    frames = []
    for split in data.splits:
        lab = data.labels[split]
        ood = S.is_ood_split(split)
        is_noisy = lab != data.original[split] if split == S.TRAIN_SPLIT else np.zeros(len(lab), bool)
        frames.append(pd.DataFrame({
            S.EXAMPLE_ID: data.ids[split],
            S.SPLIT: split,
            S.LABEL: _nullable(lab),
            S.LABEL_NAME: [names[k] if k >= 0 else None for k in lab],
            S.ORIGINAL_LABEL: _nullable(data.original[split]),
            S.IS_NOISY: is_noisy,
            S.IS_OOD: np.full(len(lab), ood, dtype=bool),
            "digits_index": _nullable(data.digits_index[split]),
            S.IMAGE: [image_png(px) for px in data.pixels[split]],
        }))
    return pd.concat(frames, ignore_index=True)


def build_sample_run(
    run_dir: str | os.PathLike[str],
    *,
    seed: int = 0,
    n_epochs: int = N_EPOCHS,
    overwrite: bool = True,
) -> Path:
    """Build the sample run (digits, 10 % flipped labels, near and far OOD) into ``run_dir``.

    Deterministic for a given ``seed`` on a given machine; takes a few seconds on 2 CPU cores.
    The analysed ``table.parquet`` is not written: run ``datamap analyze RUN_DIR`` (the
    ``datamap demo`` command does).

    Parameters
    ----------
    run_dir : path
        Target directory.
    seed : int, default 0
        Seed of the data split, the label noise, the photo patches, the model's initial weights
        and the batch order.
    n_epochs : int, default 20
        Training epochs (each one recorded).
    overwrite : bool, default True
        Replace an existing ``run_dir``; with False an existing directory raises.

    Returns
    -------
    Path
        ``run_dir``.

    Raises
    ------
    FileExistsError
        ``run_dir`` exists and ``overwrite`` is False.
    ValueError
        ``n_epochs`` < 1.
    """
    import torch

    from analysis.integrations.capture import capture_split
    from analysis.recorder import DynamicsRecorder

    if isinstance(n_epochs, bool) or not isinstance(n_epochs, int) or n_epochs < 1:
        raise ValueError(f"Expected `n_epochs` to be a positive int, got {n_epochs!r}.")
    run = Path(run_dir)
    if run.exists():
        if not overwrite:
            raise FileExistsError(f"{str(run)!r} exists; pass overwrite=True to replace it.")
        shutil.rmtree(run)
    t0 = time.perf_counter()
    data = load_sample_data(seed=seed)
    examples = _examples_frame(data)

    model = make_sample_model(seed=seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    gen = torch.Generator().manual_seed(seed)
    x = torch.as_tensor(data.pixels[S.TRAIN_SPLIT] / 16.0)
    y = torch.as_tensor(data.labels[S.TRAIN_SPLIT])
    ids = torch.as_tensor(data.ids[S.TRAIN_SPLIT])
    recorder = DynamicsRecorder(rank=0)
    for epoch in range(n_epochs):
        loss = train_one_epoch(model, optimizer, x, y, ids, epoch=epoch, generator=gen,
                               recorder=recorder)
        log.info("sample run: epoch %d, training loss %.4f", epoch, loss)

    recorder.save(run, class_names=[str(k) for k in IN_CLASSES], examples=examples,
                  source=S.SOURCE_FORWARD_PASS, task="digits-0-7 (sklearn), 10% flipped labels")
    meta = runstore.load_run_meta(run)
    meta.extra.update({
        "sample": {
            "seed": seed,
            "noise_rate": NOISE_RATE,
            "held_out_digits": list(NEAR_OOD_CLASSES),
            "model": "MLP 64-128-64-8, Adam lr 3e-3, batch 32",
            "built_by": "analysis.sample.build_sample_run",
        }
    })
    runstore.save_run_meta(run, meta)

    for split in data.splits:
        xs = torch.as_tensor(data.pixels[split] / 16.0)
        loader = [{S.EXAMPLE_ID: torch.as_tensor(data.ids[split][i:i + 256]), "x": xs[i:i + 256]}
                  for i in range(0, len(xs), 256)]
        capture_split(run, split, model, loader, layer="head", hook="input", input_key="x")
    log.info("sample run built in %.1f s", time.perf_counter() - t0)
    return run
