"""Option scores made by other tools: lm-evaluation-harness sample logs and plain tables."""
from .lm_eval import load_lm_eval_samples
from .table import load_option_table

__all__ = ["load_lm_eval_samples", "load_option_table"]
