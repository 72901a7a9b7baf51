"""Shared defaults and closed sets of choices, named once (the bottom layer: imports nothing).

Every function, config field and command that has one of these defaults reads it from here, so
`ece(...)`, `calibtune eval` and `calibtune diagnose` cannot drift apart.
"""
from __future__ import annotations

#: Equal-width confidence bins of ECE, reliability diagrams and the E-step (ours; common choice).
N_BINS = 10
#: Bootstrap resamples of an interval.
N_BOOT = 1000
#: Seed of sampling, splits and the bootstrap.
SEED = 0

#: How options are read: their letters, or their texts as continuations.
SCORINGS = ("letter", "cloze")
#: How a question is shown: the plain template, the reference code's, or the chat template.
PROMPT_STYLES = ("plain", "reference", "chat")
#: Length normalisation of a cloze score.
CLOZE_NORMS = ("none", "token", "char")
#: What `calibtune train --method` trains.
TRAIN_METHODS = ("sft", "cft", "rcft", "label_smoothing")
