"""Bounds on ECE and a diagnosis of where a model stands (docs/theory.md).

Every bound and test here is calibtune's own derivation, proved or simulated in docs/theory.md;
we have not read the paper's theorem statements (docs/theory.md §0).
"""
from .bounds import (GapFloor, NoiseBounds, accuracy_only_floor, below_chance_floor, binned_ece,
                     binned_generalisation_floor, combined_floor, generalisation_gap_floor,
                     mean_gap_bound, noise_floor_bound, noise_floor_bounds, over_under)
from .posthoc import CrossFit, cross_fit
from .regime import FloorTest, floor_test, r0_power
from .diagnosis import (BoundCheck, CollapseMeasures, CriticalAccuracy, Diagnosis, TrainingRun,
                        collapse_measures, critical_accuracy, diagnose)

__all__ = ["BoundCheck", "CollapseMeasures", "CriticalAccuracy", "CrossFit", "Diagnosis",
           "FloorTest", "GapFloor", "cross_fit", "floor_test", "r0_power",
           "NoiseBounds", "TrainingRun", "accuracy_only_floor", "below_chance_floor", "binned_ece",
           "binned_generalisation_floor", "collapse_measures", "combined_floor",
           "critical_accuracy", "diagnose", "generalisation_gap_floor", "mean_gap_bound",
           "noise_floor_bound", "noise_floor_bounds", "over_under"]
