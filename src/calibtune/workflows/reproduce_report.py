"""Deprecated home of `run_reproduce` (now `calibtune.workflows.reproduce`) and of the tables
(now `calibtune.workflows.reproduce_tables`); kept so old imports work."""
from .reproduce import run_reproduce  # noqa: F401
from .reproduce_tables import *  # noqa: F401,F403
