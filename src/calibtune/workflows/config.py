"""The configurations of the workflows, each option declared once (the CLI builds from these).

Each inherits the groups of options it shares with other commands (`calibtune.options`), so an
option is declared once. Importing this module imports no torch, so `calibtune --help` starts
fast. Field names are the keys of `config.yaml` in every run folder; the number of bins is
`n_bins` / `--n-bins` everywhere (`bins:` and `--bins` are still read).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..errors import ConfigError
from ..options import (BASE_ADAPTER_HELP, MODEL_HELP, OUT_HELP, PROMPT_HELP,  # noqa: F401
                       SCORING_HELP, SEED_HELP, Binned, Bootstrapped, FinetuneRun, Inference,
                       Lenient, Limited, ModelChoice, Output, Preferences, Prompted, Reading,
                       Seeded, inherit)
from ..training.config import TrainConfig

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
class Fewshot(Seeded):
    """Exemplars before each scored question."""

    num_fewshot: int = option(0, FEWSHOT_HELP)
    fewshot_seed: int | None = option(None, FEWSHOT_SEED_HELP)
    fewshot_data: str | None = option(None, FEWSHOT_DATA_HELP)

    def __post_init__(self) -> None:
        super().__post_init__()
        check_fewshot(self.num_fewshot)


@dataclass
class EvalConfig(Inference, Reading, Fewshot, Limited, Lenient, Binned, Bootstrapped, Output):
    """Everything `calibtune eval` needs to score a dataset with a model."""

    data: str = option("mmlu", "Built-in dataset name or a .jsonl/.csv/.parquet file.")
    split: str | None = option(None, "Split of a built-in dataset (mmlu: all|train|test).")
    num_fewshot: int = inherit(Fewshot, "num_fewshot", 0, FEWSHOT_HELP + " Groups: --group-field "
                                                                          "if given.")
    device_map: str | None = option(None, DEVICE_MAP_HELP)
    max_memory: str | None = option(None, MAX_MEMORY_HELP)
    max_batch_tokens: int | None = option(8192, "Most padded tokens per forward pass.")
    model: str = inherit(ModelChoice, "model", "smollm2-135m-instruct", MODEL_HELP[:-1] + (
        ", or openai:BASE_URL/MODEL for a model behind an OpenAI-compatible server (key in "
        "$CALIBTUNE_API_KEY or $OPENAI_API_KEY)."))
    chunk_size: int = option(512, "Items per saved chunk (what --resume reuses).")
    concurrency: int = option(8, "With --model openai:URL/MODEL: most requests in flight.")
    top_logprobs: int = option(20, "With --model openai:…: log-probabilities asked for the first "
                                   "answer token (letters outside them are floored; OpenAI's chat "
                                   "API allows 20, llama.cpp any number, vLLM its --max-logprobs).")
    request_timeout: float = option(60.0, "With --model openai:…: seconds to wait for a "
                                          "connection or an answer (then retried).")
    fields: dict = option(help="Field names of a data file (the --*-field options).",
                          factory=dict, cli=False)
    out: str = inherit(Output, "out", "runs/eval")


@dataclass
class PosthocConfig(Seeded, Binned, Bootstrapped, Output):
    """Everything `calibtune posthoc` needs."""

    scores: str = option("", "scores.npz of an eval run.")
    method: str = option("temperature", "identity | temperature | vector | matrix | histogram | "
                                        "isotonic | daca.")
    fit_fraction: float = option(0.1, "Share of items to fit on (default 0.1); the rest is "
                                      "reported.")
    reference: str | None = option(None, "Base model's scores.npz on the same items (daca).")
    # a check on the scores, not how to make them: None accepts either
    scoring: str | None = option(None, "letter | cloze: refuse scores made the other way.")
    num_fewshot: int | None = option(None, "Refuse scores made with another number of "
                                           "exemplars (the eval run's --num-fewshot).")
    out: str = inherit(Output, "out", "runs/posthoc")


@dataclass
class TrainRunConfig(FinetuneRun, Fewshot, TrainConfig):
    """`calibtune train`: the training options, and the model, data and output folder."""

    eval_seed: int | None = option(None, "Seed of the held-out sample (default: --seed); fix it "
                                         "to compare seeds on the same items.")
    num_fewshot: int = inherit(Fewshot, "num_fewshot", 0, FEWSHOT_HELP + " Used by the "
                               "evaluations and the E-step; training examples stay zero-shot.")
    load_in_4bit: bool = option(False, "QLoRA: NF4 4-bit frozen weights (needs bitsandbytes).")
    out: str = inherit(Output, "out", "runs/train")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.load_in_4bit and not self.lora:
            raise ConfigError("--load-in-4bit trains a LoRA adapter on frozen 4-bit weights; "
                              "it cannot be combined with --full-finetune")


@dataclass
class CompareConfig(Binned, Bootstrapped, Seeded, Output):
    """`calibtune compare RUN...`: the runs to overlay and compare, and where to write."""

    runs: list[str] = option(help="Run folders (or scores.npz files) to compare; the first is "
                                  "the reference.", factory=list, argument=True)
    plane: bool = option(False, "Draw training runs in the accuracy-ECE plane with the bounds "
                                "of docs/theory.md.")
    intersect: bool = option(False, "Compare runs scored on different items on the items they "
                                    "share.")
    out: str = inherit(Output, "out", "runs/compare")


@dataclass
class PreferenceEvalConfig(Inference, Prompted, Preferences, Limited, Lenient, Seeded, Output):
    """`calibtune eval --preferences FILE|hhh`: preference accuracy and margin of a model (and,
    with an adapter, of the model with the adapter disabled, plus KL(base ‖ adapted)). With
    `base_adapter`, merged first, the reference is the merged model."""

    preferences: str = inherit(Preferences, "preferences", "hhh")
    batch_size: int = inherit(Inference, "batch_size", 8, "Most pairs per forward pass "
                                                          "(--preferences: default 8).")
    out: str = inherit(Output, "out", "runs/preferences")


@dataclass
class DiagnoseConfig(Binned, Bootstrapped, Seeded):
    """`calibtune diagnose SCORES`: what is read, and where the diagnosis is written."""

    scores: str = option("", "An eval run folder, a train run folder or a scores.npz.",
                         argument=True)
    train_run: str | None = option(None, "The training run of this model: its training-item "
                                         "measurements enter the bounds.")
    keep_accuracy: bool = option(False, "Accuracy must not move (recommends post-hoc "
                                        "temperature).")
    out: str | None = inherit(Output, "out", None, "Where to write diagnosis.json/.md (default: "
                              "beside the scores).")
    # overrides what the training run's config.yaml says about its item sets (None: read it)
    same_distribution: bool | None = option(
        None, "Whether the training run's training and held-out items come from one "
              "distribution (default: read from its config.yaml; without it, or a measured gap "
              "before fine-tuning, no regime verdict is given).",
        flag="--same-distribution/--different-distribution")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.scores:
            raise ConfigError("give the scores to diagnose: an eval or train run folder, or a "
                              "scores.npz")


@dataclass
class ReproduceCommand(Output):
    """`calibtune reproduce`'s options (the comparison itself is the YAML file's)."""

    config: str = option("", "A reproduce config (configs/smollm2-mmlu.yaml, ...).")
    seeds: list[int] | None = option(None, "Seeds, e.g. --seeds 0 1 2 (default: the config's).")
    out: str | None = inherit(Output, "out", None, "Run folder (default runs/<config name>); "
                              "every step is cached there.")
    dry_run: bool = option(False, "Check the config and print the plan; load no model.")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.config:
            raise ConfigError("give --config, a reproduce config (e.g. configs/smollm2-mmlu.yaml)")


@dataclass
class ImportConfig(Limited, Binned, Bootstrapped, Seeded, Output):
    """`calibtune eval --from SOURCE PATH`: another harness's saved per-option scores."""

    source: str = option("table", "lm-eval | table.", cli=False)
    path: str = option("", "The saved outputs: a file or folder.", cli=False)
    kind: str = option("logprob", "--from table: the values are logprob (log-probabilities or "
                                  "logits) or prob.")
    renormalise: bool = option(False, "--from table: divide probabilities by their row sum "
                                      "instead of refusing rows that do not sum to 1.")
    norm: str = option("none", "--from lm-eval: none (raw sums) | char | byte (lm-eval's "
                               "acc_norm / acc_bytes).")
    tasks: list[str] | None = option(None, "lm-eval: only these tasks.", cli=False)
    fields: dict | None = option(None, "table: id, answer (the label), options, subject, "
                                       "answer_format columns.", cli=False)
    out: str = inherit(Output, "out", "runs/import")

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.source != "table" and (self.kind != "logprob" or self.renormalise or self.fields):
            raise ConfigError(f"--kind, --renormalise and the --*-field options read a table; "
                              f"they do not apply to --from {self.source}")
        if self.source != "lm-eval" and self.norm != "none":
            raise ConfigError(f"--norm reads lm-eval outputs; it does not apply to --from "
                              f"{self.source}")
