"""Names and types of every file and column in a run: the contract between layers.

Pages, exporters and readers import the names from here; nobody spells a column as a literal.
See ``docs/run-format.md`` for the documented, versioned format.
"""

from __future__ import annotations

SCHEMA_VERSION = 1
"""Version of the on-disk run format written by this package (``run.json["schema_version"]``)."""

SUPPORTED_SCHEMA_VERSIONS = frozenset({1})


class SchemaError(ValueError):
    """A file of a run breaks the documented run format (docs/run-format.md)."""


class NotFittedError(ValueError, AttributeError):
    """An estimator was used before ``fit`` (same contract as scikit-learn's)."""


# ---- files -------------------------------------------------------------------------------------
RUN_JSON = "run.json"
EXAMPLES_FILE = "examples.parquet"
DYNAMICS_DIR = "dynamics"
FEATURES_DIR = "features"
LOGITS_DIR = "logits"
TABLE_FILE = "table.parquet"
FLAGS_FILE = "flags.sqlite"
OOD_EVAL_FILE = "ood_eval.json"
CACHE_DIR = "cache"
EXPORTS_DIR = "exports"

# ---- examples.parquet ----------------------------------------------------------------------------
EXAMPLE_ID = "example_id"
SPLIT = "split"
LABEL = "label"
LABEL_NAME = "label_name"
TEXT = "text"
IMAGE = "image"
IS_NOISY = "is_noisy"
IS_OOD = "is_ood"
ORIGINAL_LABEL = "original_label"
GIVEN_LABEL = "given_label"
"""The label as given in the run, kept beside ``label`` when a curated export applies relabels."""

TRAIN_SPLIT = "train"
OOD_SPLIT_PREFIX = "ood:"

# ---- dynamics/*.parquet (long: one row per example and epoch) --------------------------------------
EPOCH = "epoch"
GOLD_PROB = "gold_prob"
MARGIN = "margin"
PRED = "pred"
LOSS = "loss"
EL2N = "el2n"
LOGITS = "logits"
DYNAMICS_REQUIRED = (EXAMPLE_ID, EPOCH, GOLD_PROB, MARGIN, PRED)
DYNAMICS_OPTIONAL = (LOSS, EL2N, LOGITS)

# ---- table.parquet (one row per example) -----------------------------------------------------------
CONFIDENCE = "confidence"
VARIABILITY = "variability"
CORRECTNESS = "correctness"
CORRECT_COUNT = "correct_count"
FORGETTING = "forgetting"
NEVER_LEARNED = "never_learned"
AUM = "aum"
EL2N_MEAN = "el2n"
LOSS_MEAN = "loss_mean"
N_EPOCHS_SEEN = "n_epochs_seen"
FINAL_PRED = "final_pred"
SUGGESTED_LABEL = "suggested_label"
"""The class the model predicted in most epochs (nullable int; :mod:`analysis.noise`)."""
LABEL_ISSUE = "label_issue"
"""True for training rows whose label the run itself estimates to be wrong (:mod:`analysis.noise`)."""
REGION = "region"
DIAGNOSIS = "diagnosis"
UMAP_X = "umap_x"
UMAP_Y = "umap_y"

DYNAMICS_METRICS = (
    CONFIDENCE,
    VARIABILITY,
    CORRECTNESS,
    CORRECT_COUNT,
    FORGETTING,
    NEVER_LEARNED,
    AUM,
    EL2N_MEAN,
    LOSS_MEAN,
    N_EPOCHS_SEEN,
    FINAL_PRED,
)

# OOD score columns: every one is oriented higher = more anomalous.
OOD_MSP = "ood_msp"
OOD_MAXLOGIT = "ood_maxlogit"
OOD_ENERGY = "ood_energy"
OOD_MAHALANOBIS = "ood_mahalanobis"
OOD_RMD = "ood_rmd"
OOD_KNN = "ood_knn"
OOD_KNN_MEAN = "ood_knn_mean"
OOD_COMBINED = "ood_combined"
"""Mean of the percentile ranks of ``ood_rmd`` and ``ood_knn`` among the training rows (the
diagnosis' default OOD score; :func:`analysis.ood_stage.combined_score`)."""
OOD_PREFIX = "ood_"

# ---- regions ---------------------------------------------------------------------------------------
EASY = "easy-to-learn"
AMBIGUOUS = "ambiguous"
HARD = "hard-to-learn"
NO_DYNAMICS = "no-dynamics"
REGIONS = (EASY, AMBIGUOUS, HARD, NO_DYNAMICS)

# ---- run.json sources --------------------------------------------------------------------------------
SOURCE_FORWARD_PASS = "forward_pass"
SOURCE_EVAL_PASS = "eval_pass"
SOURCE_CARTOGRAPHY = "cartography_import"
SOURCE_SYNTHETIC = "synthetic"
SOURCES = (SOURCE_FORWARD_PASS, SOURCE_EVAL_PASS, SOURCE_CARTOGRAPHY, SOURCE_SYNTHETIC)
RECORDING_SOURCES = (SOURCE_FORWARD_PASS, SOURCE_EVAL_PASS)
"""The two ways a training-framework integration can record logits."""


def is_ood_split(split: str) -> bool:
    """Return whether a split name marks out-of-distribution data (``ood:<name>``)."""
    return split.startswith(OOD_SPLIT_PREFIX)


def _py(value: object) -> object:
    """A NumPy scalar as the plain Python value (for readable error messages)."""
    item = getattr(value, "item", None)
    return item() if callable(item) and type(value).__module__ == "numpy" else value
