"""Deprecated name of `calibtune.option_scores` (kept so `from calibtune.scores import ...`
works): the module was renamed so it is not mistaken for the `scoring` package, which makes
the scores from a model."""
from .option_scores import *  # noqa: F401,F403
from .option_scores import (SCORES_FORMAT, OptionScores, evaluate, option_mask,  # noqa: F401
                            pad_option_rows)
