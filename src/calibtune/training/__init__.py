"""Calibration-aware fine-tuning: SFT, CFT, RCFT (EM-based ECE regulariser), label smoothing."""
from .config import METHODS, TrainConfig
from .losses import completion_loss, ece_regulariser, full_sequence_loss, smoothed_completion_loss
from .targets import EStepResult, estep_targets, rank_preserving_targets

__all__ = ["EStepResult", "METHODS", "TrainConfig", "completion_loss", "ece_regulariser",
           "estep_targets", "full_sequence_loss", "rank_preserving_targets",
           "smoothed_completion_loss"]
