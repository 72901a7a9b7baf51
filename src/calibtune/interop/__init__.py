"""Option scores made by other tools: lm-evaluation-harness sample logs, Inspect eval logs and plain
tables."""
from .inspect_log import load_inspect_logs
from .lm_eval import load_lm_eval_samples
from .table import load_option_table

__all__ = ["load_inspect_logs", "load_lm_eval_samples", "load_option_table"]
