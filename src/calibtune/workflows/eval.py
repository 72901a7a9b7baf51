"""`calibtune eval`: load items and model, score in resumable chunks, write the run folder."""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from ..data import FieldMap, load_dataset, sample_items
from ..data.fewshot import Fewshot
from ..data.items import MCQItem
from ..errors import CalibtuneError, ConfigError, DataError, RunFolderError
from ..integrity import atomic_write, atomic_write_text
from ..models import load_model
from ..models.served import is_served
from ..run_guard import RunFolder
from ..scoring import collect_logits, make_scorer, scores_from
from ..scoring.parallel import Processes, launched_processes
from .config import EvalConfig
from .fewshot import fewshot_meta, run_fewshot, write_fewshot
from .run_folder import RunOutputs, write_run

log = logging.getLogger(__name__)
# Settings that do not change an eval's results: --resume may change them.
RUN_ONLY = ("out", "device", "batch_size", "max_batch_tokens", "device_map", "max_memory",
            "concurrency", "request_timeout")


def load_eval_items(cfg: EvalConfig) -> tuple[list[MCQItem], list, Fewshot | None]:
    """The (sampled) items of the run, the rows rejected on the way, and the exemplars
    (--num-fewshot: drawn from the data's unscored items or from --fewshot-data)."""
    fields = FieldMap(**cfg.fields) if cfg.fields else None
    loaded = load_dataset(cfg.data, cfg.split, fields, skip_invalid=cfg.skip_invalid)
    items = sample_items(loaded.items, cfg.limit, cfg.seed)
    seed = cfg.seed if cfg.fewshot_seed is None else cfg.fewshot_seed
    fewshot = run_fewshot(cfg.num_fewshot, seed, items, loaded.items,
                          f"{cfg.data} ({cfg.split or 'all'})", cfg.fewshot_data, fields)
    return items, loaded.rejected, fewshot


def _fingerprint(cfg: EvalConfig, items: list[MCQItem], fewshot: Fewshot | None = None) -> str:
    h = hashlib.sha256()
    key = [cfg.model, cfg.adapter, cfg.prompt, cfg.scoring, cfg.cloze_norm, cfg.dtype,
           cfg.chunk_size] + ([cfg.base_adapter] if cfg.base_adapter else [])
    h.update(json.dumps(key).encode())
    if fewshot is not None:  # zero-shot runs keep their fingerprint (and --resume)
        h.update(json.dumps(fewshot.to_json(), sort_keys=True).encode())
    for it in items:
        h.update(f"{it.id}\x00{it.answer}\x00{it.n_options}\x01".encode())
    return h.hexdigest()


def score_resumable(scorer: Any, items: list[MCQItem], encoded: list,
                    partial: Path, fingerprint: str, chunk_size: int, resume: bool,
                    processes: Processes = Processes()) -> np.ndarray | None:
    """Option logits of all items, saving each finished chunk so a killed run can go on.

    Under `accelerate launch` the chunks still to score are dealt round-robin over the
    processes, one chunk each per round; every round's scores are gathered on rank 0, which
    alone writes the chunk files (so a resumed run, on any number of processes, reuses them)
    and returns the logits. The other ranks return None.
    """
    k_max = max(it.n_options for it in items)
    bounds = [(start, min(len(items), start + chunk_size))
              for start in range(0, len(items), chunk_size)]
    logits = np.zeros((len(items), k_max))
    todo = list(range(len(bounds)))
    if processes.is_main:
        todo = _reusable_chunks(partial, fingerprint, resume, bounds, logits)
    todo = processes.broadcast(todo)
    for first in range(0, len(todo), processes.world):
        turn = todo[first: first + processes.world]
        mine = turn[processes.rank] if processes.rank < len(turn) else None
        block = None
        if mine is not None:
            start, stop = bounds[mine]
            block = np.zeros((stop - start, k_max))
            scored = collect_logits(scorer, items[start:stop], encoded[start:stop])
            block[:, : scored.shape[1]] = scored
        for c, part in processes.gather((mine, block)):
            if c is None or not processes.is_main:
                continue
            atomic_write(partial / f"chunk-{c:05d}.npy", lambda tmp: _save_array(tmp, part))
            logits[slice(*bounds[c])] = part
    return logits if processes.is_main else None


def _reusable_chunks(partial: Path, fingerprint: str, resume: bool,
                     bounds: list[tuple[int, int]], logits: np.ndarray) -> list[int]:
    """Fill `logits` from the saved chunks of this run (with --resume); the chunks left to
    score. A folder of another run's chunks is cleared."""
    stamp = partial / "fingerprint.txt"
    if partial.exists() and not (resume and stamp.exists() and stamp.read_text() == fingerprint):
        if resume:
            log.warning("partial scores in %s belong to another run; starting over", partial)
        shutil.rmtree(partial)
    partial.mkdir(parents=True, exist_ok=True)
    atomic_write_text(stamp, fingerprint)
    todo = []
    for c, (start, stop) in enumerate(bounds):
        chunk_file = partial / f"chunk-{c:05d}.npy"
        if chunk_file.exists():
            block = np.load(chunk_file, allow_pickle=False)
            if block.shape == (stop - start, logits.shape[1]):
                logits[start:stop] = block
                log.info("chunk %d: reusing saved scores", c)
                continue
        todo.append(c)
    return todo


def _save_array(path: Path, array: np.ndarray) -> None:
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _drop_too_long(scorer: Any, items: list[MCQItem]
                   ) -> tuple[list[MCQItem], list[list[int]], list[DataError]]:
    """With --skip-invalid: keep the items whose prompt fits the model, reject the others."""
    kept, encoded, errors = [], [], []
    for it in items:
        try:
            encoded += scorer.encode([it])
            kept.append(it)
        except DataError as err:
            errors.append(err)
    if not kept:
        raise DataError(f"no item fits the model's context ({len(errors)} rejected)")
    return kept, encoded, errors


def run_eval(cfg: EvalConfig, *, resume: bool = False, overwrite: bool = False,
             progress: bool = True) -> RunOutputs:
    """Score `cfg.data` with `cfg.model` and write the run folder `cfg.out` (a folder holding
    another run is refused unless `overwrite`; `resume` reuses saved chunks, same settings).

    Under `accelerate launch` every process scores a share of the items and rank 0 claims and
    writes the run folder; the other ranks return `RunOutputs` with empty metrics."""
    processes = launched_processes()
    try:
        with _claimed_by_rank0(cfg, processes, resume, overwrite) as folder:
            return _eval_into(folder, cfg, resume, progress, processes)
    finally:
        processes.close()


@contextlib.contextmanager
def _claimed_by_rank0(cfg: EvalConfig, processes: Processes, resume: bool, overwrite: bool
                      ) -> Iterator[RunFolder | None]:
    """Rank 0 claims `--out` (it alone writes) and tells the other ranks whether it could, before
    anyone loads the model: a refused folder stops every rank at once with rank 0's reason,
    instead of leaving them to wait for rank 0 until the launcher kills them."""
    if not processes.is_main:
        refusal = processes.broadcast(None)
        if refusal is not None:
            raise RunFolderError(f"{refusal} (rank 0 refused; rank {processes.rank} stops too)")
        yield None
        return
    with contextlib.ExitStack() as stack:
        try:
            folder = stack.enter_context(RunFolder(cfg.out, asdict(cfg), command="eval",
                                                   resume=resume, overwrite=overwrite,
                                                   ignore=RUN_ONLY))
        except CalibtuneError as refusal:
            processes.broadcast(str(refusal))
            raise
        processes.broadcast(None)
        yield folder


def load_scorer(cfg: EvalConfig, device: str | None, progress: bool, fewshot: Fewshot | None
                ) -> Any:
    """The model of `cfg.model` loaded and the scorer that reads its option scores: the one
    place where a model spec becomes a scorer: `openai:BASE_URL/MODEL` is a model behind an
    OpenAI-compatible server (no weights here), anything else is loaded in this process."""
    if is_served(cfg.model):
        from ..scoring.served import served_scorer

        return served_scorer(cfg.model, cfg.scoring, prompt=cfg.prompt,
                             cloze_norm=cfg.cloze_norm, concurrency=cfg.concurrency,
                             timeout=cfg.request_timeout, top_logprobs=cfg.top_logprobs,
                             progress=progress, fewshot=fewshot)
    model, tokenizer = load_model(cfg.model, adapter=cfg.adapter, base_adapter=cfg.base_adapter,
                                  dtype=cfg.dtype, device=device,
                                  trust_remote_code=cfg.trust_remote_code,
                                  device_map=cfg.device_map, max_memory=cfg.max_memory)
    return make_scorer(model, tokenizer, cfg.scoring, prompt=cfg.prompt,
                       cloze_norm=cfg.cloze_norm, batch_size=cfg.batch_size,
                       max_batch_tokens=cfg.max_batch_tokens, progress=progress,
                       fewshot=fewshot)


def _eval_into(folder: RunFolder | None, cfg: EvalConfig, resume: bool, progress: bool,
               processes: Processes) -> RunOutputs:
    items, rejected, fewshot = load_eval_items(cfg)  # bad data fails here, before any writing
    if processes.world > 1 and cfg.device_map:
        raise ConfigError("--device-map places one model over all the devices; it cannot be "
                          "combined with accelerate launch's one model per process")
    main = processes.is_main
    served = is_served(cfg.model)
    if served and (processes.world > 1 or cfg.adapter or cfg.base_adapter):
        raise ConfigError("--model openai:… is scored by its server: no accelerate launch, "
                          "--adapter or --base-adapter")
    scorer = load_scorer(cfg, cfg.device or processes.device, progress and main, fewshot)
    try:  # letters and context lengths are checked before anything is written
        encoded = scorer.encode(items)
    except DataError:
        if not cfg.skip_invalid:
            raise
        items, encoded, too_long = _drop_too_long(scorer, items)
        rejected = rejected + too_long
    # rank 0 clears the folder first with --overwrite and writes config.yaml
    out = folder.open() if folder is not None else Path(cfg.out)
    if rejected and main:
        atomic_write_text(out / "rejected.jsonl", "".join(
            json.dumps({"file": e.file, "row": e.row, "field": e.field, "reason": e.reason}) + "\n"
            for e in rejected))
        log.warning("%d rows rejected; reasons in %s", len(rejected), out / "rejected.jsonl")
    partial = out / ".partial"
    if served:
        scorer.record_dir = partial  # top-k coverage of each finished batch, kept for --resume
    logits = score_resumable(scorer, items, encoded, partial, _fingerprint(cfg, items, fewshot),
                             cfg.chunk_size, resume, processes)
    if not main:
        return RunOutputs(out, {})
    meta = {"model": cfg.model, "adapter": cfg.adapter, "prompt": cfg.prompt,
            "scoring": cfg.scoring, "cloze_norm": cfg.cloze_norm if cfg.scoring == "cloze" else None,
            "data": cfg.data, "split": cfg.split, "limit": cfg.limit, "seed": cfg.seed,
            **({"base_adapter": cfg.base_adapter} if cfg.base_adapter else {}),
            **fewshot_meta(fewshot)}
    extra = scorer.summary(items) if served else None
    if served and cfg.scoring == "letter":
        meta["outside_topk"] = extra["served"]["outside_topk"]
        atomic_write_text(out / "topk_coverage.csv", scorer.item_table(items))
    scores = scores_from(items, logits, meta)
    write_fewshot(out, fewshot)
    result = write_run(out, scores, title=f"calibtune eval — {cfg.model} on {cfg.data}",
                       context={k: v for k, v in meta.items() if v is not None}, n_bins=cfg.n_bins,
                       n_boot=cfg.n_boot, seed=cfg.seed, label=cfg.model, extra_metrics=extra)
    shutil.rmtree(partial, ignore_errors=True)
    return result
