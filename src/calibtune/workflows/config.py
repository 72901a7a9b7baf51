"""The configurations of the workflows, each option declared once (the CLI builds from these).

Importing this module imports no torch, so `calibtune --help` starts fast. Field names are the
keys of `config.yaml` in every run folder, so they stay as they are; the command line spells
the number of bins `--n-bins` everywhere (`--bins` still works, hidden).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..errors import ConfigError
from ..training.config import PROMPT_HELP, SCORING_HELP, SEED_HELP, TrainConfig

MODEL_HELP = "Built-in name, model folder or .gguf file."
EVAL_MODEL_HELP = (MODEL_HELP[:-1] + ", or openai:BASE_URL/MODEL for a model behind an "
                   "OpenAI-compatible server (key in $CALIBTUNE_API_KEY or $OPENAI_API_KEY).")
BASE_ADAPTER_HELP = ("A PEFT adapter merged into the model first (e.g. a `calibtune align` "
                     "run's OUT/adapter: the DPO'd model).")
OUT_HELP = "Output folder."
BINS_HELP = "Number of confidence bins (default 10)."
DEVICE_MAP_HELP = ("auto: place a model larger than one device over the GPUs and the CPU "
                   "(accelerate's big-model placement) instead of --device.")
MAX_MEMORY_HELP = "With --device-map: most memory per device, e.g. cpu=2GiB or 0=20GiB,cpu=60GiB."
FEWSHOT_HELP = ("Exemplars before each question (default 0), drawn per subject from items "
                "that are not scored.")
FEWSHOT_SEED_HELP = "Seed of the exemplar draw (default: --seed)."
FEWSHOT_DATA_HELP = ("Draw exemplars from this .jsonl/.csv/.parquet file (or built-in set) "
                     "instead of the unscored items of the data.")


def check_fewshot(k: int) -> None:
    if k < 0:
        raise ConfigError(f"--num-fewshot must be 0 or more, got {k}")


@dataclass
class EvalConfig:
    """Everything `calibtune eval` needs."""

    model: str = option("smollm2-135m-instruct", EVAL_MODEL_HELP)
    data: str = option("mmlu", "Built-in dataset name or a .jsonl/.csv/.parquet file.")
    split: str | None = option(None, "Split of a built-in dataset (mmlu: all|train|test).")
    limit: int | None = option(None, "Score a seeded random sample of N items.")
    seed: int = option(0, SEED_HELP)
    prompt: str = option("plain", PROMPT_HELP)
    scoring: str = option("letter", SCORING_HELP)
    cloze_norm: str = option("none", "Cloze length normalisation: none | token | char.")
    num_fewshot: int = option(0, FEWSHOT_HELP + " Groups: --group-field if given.")
    fewshot_seed: int | None = option(None, FEWSHOT_SEED_HELP)
    fewshot_data: str | None = option(None, FEWSHOT_DATA_HELP)
    adapter: str | None = option(None, "A PEFT adapter folder to apply.")
    base_adapter: str | None = option(None, BASE_ADAPTER_HELP)
    dtype: str = option("float32", "float32 | bfloat16 | float16.")
    device: str | None = option(None, "cpu, cuda, cuda:1 … (default: cuda if present; under "
                                      "accelerate launch, each process's own).")
    device_map: str | None = option(None, DEVICE_MAP_HELP)
    max_memory: str | None = option(None, MAX_MEMORY_HELP)
    batch_size: int = option(16, "Most items per forward pass.")
    max_batch_tokens: int | None = option(8192, "Most padded tokens per forward pass.")
    bins: int = option(10, BINS_HELP, flag="--n-bins", aliases=("--bins",))
    n_boot: int = option(1000, "Bootstrap resamples for intervals (0: none).")
    chunk_size: int = option(512, "Items per saved chunk (what --resume reuses).")
    concurrency: int = option(8, "With --model openai:URL/MODEL: most requests in flight.")
    top_logprobs: int = option(20, "With --model openai:…: log-probabilities asked for the first "
                                   "answer token (letters outside them are floored; OpenAI's chat "
                                   "API allows 20, llama.cpp any number, vLLM its --max-logprobs).")
    request_timeout: float = option(60.0, "With --model openai:…: seconds to wait for a "
                                          "connection or an answer (then retried).")
    skip_invalid: bool = option(False, "Keep going past bad rows; list them in rejected.jsonl.")
    trust_remote_code: bool = option(False, "Allow a model folder's own code to run.")
    fields: dict = option(help="Field names of a data file (the --*-field options).",
                          factory=dict, cli=False)
    out: str = option("runs/eval", OUT_HELP)

    def __post_init__(self) -> None:
        if self.bins < 1:
            raise ConfigError(f"--n-bins must be at least 1, got {self.bins}")
        check_fewshot(self.num_fewshot)


@dataclass
class PosthocConfig:
    """Everything `calibtune posthoc` needs."""

    scores: str = option("", "scores.npz of an eval run.")
    method: str = option("temperature", "identity | temperature | vector | matrix | histogram | "
                                        "isotonic | daca.")
    fit_fraction: float = option(0.1, "Share of items to fit on (default 0.1); the rest is "
                                      "reported.")
    seed: int = option(0, SEED_HELP)
    reference: str | None = option(None, "Base model's scores.npz on the same items (daca).")
    scoring: str | None = option(None, "letter | cloze: refuse scores made the other way.")
    num_fewshot: int | None = option(None, "Refuse scores made with another number of "
                                           "exemplars (the eval run's --num-fewshot).")
    bins: int = option(10, BINS_HELP, flag="--n-bins", aliases=("--bins",))
    n_boot: int = option(1000, "Bootstrap resamples for intervals.")
    out: str = option("runs/posthoc", OUT_HELP)


@dataclass
class TrainRunConfig(TrainConfig):
    """`calibtune train`: the training options, and the model, data and output folder."""

    model: str = option("smollm2-135m-instruct", MODEL_HELP)
    base_adapter: str | None = option(None, BASE_ADAPTER_HELP)
    data: str = option("mmlu", "Training data: built-in name or file.")
    split: str | None = option("train", "Split of a built-in training dataset (default train).")
    train_limit: int | None = option(None, "Train on a seeded sample of N items.")
    eval_data: str | None = option(None, "Held-out data (default: same dataset).")
    eval_split: str | None = option("test", "Held-out split (default test).")
    eval_limit: int | None = option(500, "Evaluate on a seeded sample of N items (default 500).")
    eval_seed: int | None = option(None, "Seed of the held-out sample (default: --seed); fix it "
                                         "to compare seeds on the same items.")
    eval_before: bool = option(True, "Also score the held-out items before training (LoRA).")
    num_fewshot: int = option(0, FEWSHOT_HELP + " Used by the evaluations and the E-step; "
                                                "training examples stay zero-shot.")
    fewshot_seed: int | None = option(None, FEWSHOT_SEED_HELP)
    fewshot_data: str | None = option(None, FEWSHOT_DATA_HELP)
    load_in_4bit: bool = option(False, "QLoRA: NF4 4-bit frozen weights (needs bitsandbytes).")
    dtype: str = option("float32", "float32 | bfloat16.")
    out: str = option("runs/train", OUT_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fewshot(self.num_fewshot)
        if self.load_in_4bit and not self.lora:
            raise ConfigError("--load-in-4bit trains a LoRA adapter on frozen 4-bit weights; "
                              "it cannot be combined with --full-finetune")


@dataclass
class CompareConfig:
    """`calibtune report`: runs to overlay (given as arguments) and where to write."""

    out: str = option("runs/compare", OUT_HELP)
    n_bins: int = option(10, BINS_HELP, aliases=("--bins",))
