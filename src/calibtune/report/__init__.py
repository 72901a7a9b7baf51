"""Diagrams and reports of calibration results: prepare_* (data), draw_*(ax) and save_*."""
from .markdown import render_report
from .plots import (ReliabilityData, draw_bin_counts, draw_classwise, draw_overlay,
                    draw_reliability, prepare_classwise, prepare_reliability, save_classwise,
                    save_figure, save_overlay, save_reliability)

__all__ = ["ReliabilityData", "draw_bin_counts", "draw_classwise", "draw_overlay",
           "draw_reliability", "prepare_classwise", "prepare_reliability", "render_report",
           "save_classwise", "save_figure", "save_overlay", "save_reliability"]
