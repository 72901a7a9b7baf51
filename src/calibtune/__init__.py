"""calibtune: measure and restore the calibration of aligned LLMs on multiple-choice questions."""
from .data import FieldMap, MCQItem, load_dataset, load_items
from .errors import CalibtuneError, ConfigError, DataError, IntegrityError, ModelError
from .metrics import bin_table, bootstrap_ci, classwise_ece, ece, ece_noise_floor, summarize
from .scores import OptionScores

__version__ = "0.1.0"
__all__ = ["CalibtuneError", "ConfigError", "DataError", "FieldMap", "IntegrityError", "MCQItem",
           "ModelError", "OptionScores", "bin_table", "bootstrap_ci", "classwise_ece", "ece",
           "ece_noise_floor", "load_dataset", "load_items", "summarize", "__version__"]
