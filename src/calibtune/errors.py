"""One exception family, so the CLI can turn any expected failure into a one-line message.

One type per fault, whichever module finds it:
- `DataError`: a dataset row is unusable (file, row and field named).
- `ConfigError`: a configuration value or option is invalid.
- `InputError`: arrays given to a library function are malformed (shape, NaN, labels, mask).
- `SavedFileError`: a saved calibtune file (scores.npz, calibrator.json) is missing or unreadable.
- `ModelError`: a model or tokenizer cannot be used as asked.
- `AssetError`: a built-in model or dataset is not installed.
- `IntegrityError`: a file does not match its pinned digest.
- `RunFolderError`: a run folder holds another run, other settings, or another writer's lock.
- `TrainingError`: training stopped on a fault (a non-finite loss or gradient, a failed save), or
  a checkpoint cannot be resumed (corrupted, incomplete, another configuration).
"""
from __future__ import annotations


class CalibtuneError(Exception):
    """Base class of every error calibtune raises on purpose (bad input, bad config, bad model)."""


class DataError(CalibtuneError):
    """A dataset row is unusable. The message names the file, the 1-based row and the field."""

    def __init__(self, message: str, *, file: str | None = None, row: int | None = None,
                 field: str | None = None) -> None:
        self.file, self.row, self.field, self.reason = file, row, field, message
        where = []
        if file is not None:
            where.append(str(file))
        if row is not None:
            where.append(f"row {row}")
        if field is not None:
            where.append(f"field '{field}'")
        super().__init__(f"{', '.join(where)}: {message}" if where else message)


class ConfigError(CalibtuneError):
    """A configuration value or command-line option is invalid."""


class InputError(CalibtuneError, ValueError):
    """Arrays given to a metric, calibrator or `OptionScores` are malformed; the message says
    which and how. Also a ValueError, as NumPy users expect."""


class SavedFileError(CalibtuneError):
    """A saved calibtune file (scores.npz, calibrator.json) is missing or unreadable."""


class ModelError(CalibtuneError):
    """A model or tokenizer cannot be used as asked (letters not single tokens, NaN logits, ...)."""


class AssetError(CalibtuneError):
    """A built-in model or dataset is not installed; the message says how to install it."""


class IntegrityError(CalibtuneError):
    """A file does not match its pinned digest."""


class RunFolderError(CalibtuneError):
    """A run folder cannot be written as asked: it holds another run (and neither --overwrite
    nor --resume was given), a run with other settings (--resume), or another process's lock."""


class TrainingError(CalibtuneError):
    """Training stopped on a fault, or a checkpoint cannot be resumed; the message says at which
    step, what went wrong and which checkpoint is kept."""
