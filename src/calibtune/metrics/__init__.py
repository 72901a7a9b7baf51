"""Calibration metrics on plain arrays (probabilities or logits [n, K], labels [n], mask)."""
from .binning import BinTable, assign_bins, bin_edges, bin_statistics, calibration_error_from_table
from .calibration import bin_table, classwise_ece, classwise_tables, ece
from .collapse import CollapseMeasures, collapse_measures
from .conformal import ConformalResult, split_conformal
from .debiased import DebiasedCE, debiased_ce_interval, debiased_rms_ce, debiased_squared_ce
from .groups import GroupTable, group_table
from .paired import PairedComparison, align_items, compare_scores, mcnemar_exact, paired_compare
from .proper import accuracy, brier, gold_nll, nll
from .selective import (accuracy_coverage_curve, area_under_accuracy_coverage, auroc,
                        auroc_from_confidence, selective_accuracies, selective_accuracy)
from .smooth import smooth_ece, smooth_ece_at
from .summary import summarize
from .synthetic import sharpened_logits
from .uncertainty import Interval, NoiseFloor, bootstrap_ci, ece_noise_floor
from .validation import MetricInputError, check_inputs, log_softmax, softmax, top_label

__all__ = ["CollapseMeasures", "ConformalResult", "GroupTable", "PairedComparison", "align_items",
           "collapse_measures", "compare_scores", "group_table", "mcnemar_exact", "paired_compare",
           "sharpened_logits", "split_conformal",
           "BinTable", "DebiasedCE", "Interval", "MetricInputError", "NoiseFloor", "accuracy",
           "accuracy_coverage_curve", "area_under_accuracy_coverage", "assign_bins", "auroc",
           "auroc_from_confidence", "bin_edges", "bin_statistics", "bin_table",
           "bootstrap_ci", "brier", "calibration_error_from_table", "check_inputs",
           "classwise_ece", "classwise_tables", "debiased_ce_interval", "debiased_rms_ce",
           "debiased_squared_ce", "ece", "ece_noise_floor", "gold_nll", "log_softmax",
           "nll",
           "selective_accuracies", "selective_accuracy", "smooth_ece", "smooth_ece_at",
           "softmax", "summarize", "top_label"]
