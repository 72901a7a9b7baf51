"""`OptionScores`: the K option scores of every item — the hinge between models and metrics.

Plain NumPy, saved as ``scores.npz`` (no pickle), so metrics, calibrators and reports run again
without the model. `evaluate` turns them into every metric of a run, as plain data. A saved file
is checked whole when it is read (archive, format, dtypes, shapes, labels, finite scores): a
truncated, hand-made or newer-format file is one `SavedFileError` naming the file.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .defaults import N_BINS, N_BOOT
from .errors import InputError, SavedFileError
from .integrity import atomic_write
from .metrics.summary import summarize
from .metrics.validation import check_inputs, softmax

SCORES_FORMAT = 1  # the layout of scores.npz; files written before 2026-11-29 carry no format
ARRAY_KINDS = {"logits": ("fiu", "numbers"), "labels": ("iu", "integer option indices"),
               "mask": ("b", "booleans"), "ids": ("U", "text"), "groups": ("U", "text"),
               "meta": ("U", "a JSON text"), "format": ("iu", "an integer")}


def option_mask(n_options, k_max: int | None = None) -> np.ndarray:
    """[n, K_max] boolean mask: True for the options each item has (n_options[i] of them)."""
    n_options = np.asarray(n_options, dtype=np.int64)
    k_max = int(n_options.max()) if k_max is None else k_max
    return np.arange(k_max)[None, :] < n_options[:, None]


def pad_option_rows(rows) -> tuple[np.ndarray, np.ndarray]:
    """(logits [n, K_max], mask) from per-item score lists of differing lengths (0 where masked)."""
    mask = option_mask([len(r) for r in rows])
    logits = np.zeros(mask.shape)
    logits[mask] = np.concatenate([np.asarray(r, dtype=np.float64) for r in rows])
    return logits, mask


@dataclass
class OptionScores:
    """Option scores [n, K_max], gold labels [n], option mask [n, K_max] and item ids [n].

    `logits` holds whatever the softmax over an item's options is taken of: the option-letter
    logits in letter scoring, the (normalised) log-likelihoods of the option texts in cloze
    scoring (`meta["scoring"]` says which), or log-probabilities after a calibrator. Any of
    them is a logit vector up to a constant per item, so every metric and calibrator takes
    them alike. Masked entries (options an item does not have) hold 0 and are ignored
    everywhere. `meta` records how the scores were made (model, prompt, scoring mode).
    `groups` [n] (optional) names each item's group — its subject, or any field asked for — for
    the per-group table of every run folder.
    """

    logits: np.ndarray
    labels: np.ndarray
    mask: np.ndarray
    ids: np.ndarray
    meta: dict = field(default_factory=dict)
    groups: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.logits = np.asarray(self.logits, dtype=np.float64)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.mask = np.asarray(self.mask, dtype=bool)
        self.ids = np.asarray(self.ids, dtype=str)
        n = len(self.labels)
        if self.groups is not None:
            self.groups = np.asarray(self.groups, dtype=str)
            if self.groups.shape != (n,):
                raise InputError(f"OptionScores groups has shape {self.groups.shape}, "
                                 f"expected ({n},)")
        if self.logits.ndim != 2 or self.logits.shape[0] != n or self.mask.shape != self.logits.shape \
                or self.ids.shape != (n,):
            raise InputError(f"inconsistent OptionScores shapes: logits {self.logits.shape}, "
                                 f"labels {self.labels.shape}, mask {self.mask.shape}, "
                                 f"ids {self.ids.shape}")

    def __len__(self) -> int:
        return len(self.labels)

    def probs(self) -> np.ndarray:
        """Softmax over each item's own options (masked options get probability 0)."""
        return softmax(self.logits, self.mask)

    def subset(self, index: np.ndarray) -> "OptionScores":
        return OptionScores(self.logits[index], self.labels[index], self.mask[index],
                            self.ids[index], dict(self.meta),
                            None if self.groups is None else self.groups[index])

    def save(self, path: str | Path) -> None:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                extra = {} if self.groups is None else {"groups": self.groups}
                np.savez_compressed(f, logits=self.logits, labels=self.labels, mask=self.mask,
                                    ids=self.ids, meta=np.array(json.dumps(self.meta, sort_keys=True)),
                                    format=np.array(SCORES_FORMAT), **extra)
        atomic_write(path, write)

    @classmethod
    def load(cls, path: str | Path) -> "OptionScores":
        """Read a scores.npz (never unpickling): `SavedFileError` naming the file and the fault
        unless it is a whole file of a format this version reads, with valid scores."""
        path = Path(path)
        if not path.exists():
            raise SavedFileError(f"{path}: scores file not found")
        if path.is_dir():
            raise SavedFileError(f"{path}: is a folder, not a scores.npz")
        try:
            loaded = np.load(path, allow_pickle=False)
            if not isinstance(loaded, np.lib.npyio.NpzFile):
                raise ValueError("one .npy array, not an .npz archive")
            with loaded as z:
                arrays = {k: z[k] for k in z.files}
        except Exception as err:  # BadZipFile, EOFError, zlib.error, ValueError, OSError ...
            if "Object arrays" in str(err):
                raise SavedFileError(f"{path}: unreadable scores file: it holds Python objects, "
                                     "which calibtune never unpickles") from None
            reason = "not an .npz archive" if "pickle" in str(err) else f"{type(err).__name__}: {err}"
            raise SavedFileError(f"{path}: unreadable scores file, truncated or not written by "
                                 f"calibtune ({reason})") from None
        return cls.from_arrays(arrays, str(path))

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray], file: str) -> "OptionScores":
        """The scores of a scores.npz's arrays, every field checked (`load`)."""
        def bad(reason: str) -> SavedFileError:
            return SavedFileError(f"{file}: {reason}")

        fmt = arrays.get("format")
        if fmt is not None and (fmt.shape != () or fmt.dtype.kind not in "iu"):
            raise bad("its format field is not an integer")
        if fmt is not None and int(fmt) > SCORES_FORMAT:
            raise bad(f"written by a newer calibtune (scores format {int(fmt)}; this version reads "
                      f"format {SCORES_FORMAT}): upgrade calibtune to read it")
        missing = {"logits", "labels", "mask", "ids"} - set(arrays)
        if missing:
            raise bad(f"not a calibtune scores file (missing {', '.join(sorted(missing))})")
        for name, (kinds, what) in ARRAY_KINDS.items():
            if name in arrays and arrays[name].dtype.kind not in kinds:
                raise bad(f"{name} holds {arrays[name].dtype}, expected {what}")
        meta = {}
        if "meta" in arrays:
            try:
                meta = json.loads(str(arrays["meta"])) if arrays["meta"].shape == () else None
            except ValueError:
                meta = None
            if not isinstance(meta, dict):
                raise bad("meta is not a JSON object")
        try:
            scores = cls(arrays["logits"], arrays["labels"], arrays["mask"], arrays["ids"], meta,
                         arrays.get("groups"))
            check_inputs(scores.logits, scores.labels, scores.mask, from_logits=True)
        except InputError as err:
            raise bad(str(err)) from None
        return scores


def evaluate(scores: OptionScores, *, n_bins: int = N_BINS, n_boot: int = N_BOOT, seed: int = 0
             ) -> dict:
    """Every metric of `scores`, as `metrics.json` holds it. Plain data; nothing is written.

    Accuracy, the ECE family, proper scores (NLL exact, from the logits), selective
    prediction, bootstrap intervals (under "ci") and the ECE noise floor (`metrics.summarize`);
    also `collapse` (how far predictions pile onto one option: a letter prior or spread
    overconfidence? docs/theory.md), `conformal` (split-conformal LAC and APS sets at α = 0.1
    on a seeded half: coverage and set sizes) and, when the scores carry groups, `groups` (the
    per-group table, worst-calibrated first).

    Parameters
    ----------
    scores : OptionScores
        Option logits, labels and mask of the scored items (from `score`, or loaded).
    n_bins : int, default 10
        Confidence bins of the binned metrics.
    n_boot : int, default 1000
        Bootstrap resamples of the intervals; 0: no intervals.
    seed : int, default 0
        Seeds the bootstrap, the noise floor and the conformal split.

    Returns
    -------
    dict
        Metric name → number or nested dict.

    Examples
    --------
    Logits of a model that puts its mass on the right option three times in four:

    >>> import numpy as np
    >>> from calibtune import OptionScores, evaluate
    >>> logits = np.array([[3.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 1.0], [2.0, 0.0, 0.0]])
    >>> scores = OptionScores(logits, np.array([0, 1, 2, 1]), np.ones((4, 3), bool),
    ...                       ["q0", "q1", "q2", "q3"])
    >>> m = evaluate(scores, n_boot=0)
    >>> m["accuracy"], round(m["mean_confidence"], 3), round(m["ece"], 3)
    (0.75, 0.765, 0.272)
    >>> m["collapse"]["letter_prior"]
    False
    """
    from .metrics.conformal import split_conformal
    from .metrics.groups import group_table
    from .metrics.collapse import collapse_measures

    probs = scores.probs()
    metrics = summarize(probs, scores.labels, scores.mask, n_bins=n_bins, n_boot=n_boot,
                        seed=seed, logits=scores.logits)
    metrics["collapse"] = collapse_measures(probs, scores.labels, scores.mask).to_dict()
    if len(scores) >= 4:
        metrics["conformal"] = {
            method: split_conformal(probs, scores.labels, scores.mask, alpha=CONFORMAL_ALPHA,
                                    method=method, seed=seed).to_dict()
            for method in ("lac", "aps")}
    if scores.groups is not None and len(set(scores.groups.tolist())) > 1:
        metrics["groups"] = group_table(probs, scores.labels, scores.groups, scores.mask,
                                        n_bins=n_bins, n_boot=min(n_boot, 200), seed=seed,
                                        n_sim=200).to_dict()
    return metrics


CONFORMAL_ALPHA = 0.1
