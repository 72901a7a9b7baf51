"""Diagrams and reports of calibration results."""
from .markdown import render_report
from .plots import (ReliabilityData, draw_reliability, plot_classwise, plot_overlay, plot_reliability,
                    prepare_classwise, prepare_reliability)

__all__ = ["ReliabilityData", "draw_reliability", "plot_classwise", "plot_overlay", "plot_reliability",
           "prepare_classwise", "prepare_reliability", "render_report"]
