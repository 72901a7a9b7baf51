"""Bounds on ECE and a diagnosis of where a model stands (docs/theory.md).

Every bound here is calibtune's own derivation, proved in docs/theory.md; the paper's theorem
statements are not available to us (METHOD.md §4).
"""
from .bounds import (GapFloor, NoiseBounds, accuracy_only_floor, below_chance_floor, binned_ece,
                     binned_generalisation_floor, combined_floor, generalisation_gap_floor,
                     mean_gap_bound, noise_floor_bound, noise_floor_bounds, over_under)
from .diagnosis import (BoundCheck, CollapseMeasures, CriticalAccuracy, Diagnosis, TrainingRun,
                        collapse_measures, critical_accuracy, diagnose)

__all__ = ["BoundCheck", "CollapseMeasures", "CriticalAccuracy", "Diagnosis", "GapFloor",
           "NoiseBounds", "TrainingRun", "accuracy_only_floor", "below_chance_floor", "binned_ece",
           "binned_generalisation_floor", "collapse_measures", "combined_floor",
           "critical_accuracy", "diagnose", "generalisation_gap_floor", "mean_gap_bound",
           "noise_floor_bound", "noise_floor_bounds", "over_under"]
