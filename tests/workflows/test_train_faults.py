"""Training faults (docs/reliability.md): non-finite values, broken or foreign checkpoints, a full disk.

Each test drives `calibtune train` on the tiny model and fails when its protection is removed:
the run stops with one line, no checkpoint holds non-finite weights, a refused resume leaves the
run folder byte for byte as it was, and a failed save leaves the previous checkpoint resumable.
"""
from dataclasses import asdict, replace
import errno
import json
import re
import shutil

import pytest
import yaml
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from calibtune.cli import app
from calibtune.errors import TrainingError
from calibtune.training import estep, objective
from calibtune.training.faults import SEAL
from calibtune.workflows.train import run_training

from conftest import make_items, tiny_train_config, write_train_eval

runner = CliRunner()
STEPS = ["--max-steps", "2", "--save-steps", "1"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_train_eval(tmp_path_factory.mktemp("fault-data"),
                            make_items(24, k=[4, 3], seed=1), make_items(8, seed=2))


def train(tiny_llama, data, out, *args):
    """`calibtune train` on the tiny model: exit code and output."""
    cfg = out.parent / f"{out.name}.yaml"
    cfg.write_text(f"model: {tiny_llama}\ndata: {data / 'train.jsonl'}\nsplit: null\n"
                   f"eval_data: {data / 'eval.jsonl'}\neval_split: null\neval_limit: null\n"
                   "lora_r: 4\nlora_alpha: 8\nlora_dropout: 0.0\nbatch_size: 4\n"
                   "learning_rate: 0.005\nepoch_eval_limit: 0\neval_before: false\n")
    res = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(out), *args])
    return res.exit_code, res.output.strip()


def one_line_error(code, text):
    """The error line (progress bars of the run may precede it)."""
    assert code == 2, text
    assert "Traceback" not in text, text
    lines = [x for x in re.split(r"[\r\n]", text) if "error: " in x]
    assert len(lines) == 1, text
    return lines[0][lines[0].index("error: "):]


def finite_checkpoints(run):
    """The checkpoint folders of `run`, each asserted to hold finite weights and a seal."""
    found = sorted(p.name for p in (run / "checkpoints").glob("checkpoint-*"))
    for name in found:
        weights = load_file(run / "checkpoints" / name / "adapter_model.safetensors")
        assert all(torch.isfinite(t).all() for t in weights.values()), name
        assert (run / "checkpoints" / name / SEAL).exists(), name
    return found


def nan_at_call(monkeypatch, module, name, call, make_bad):
    """Replace module.name with a wrapper whose `call`-th result goes through `make_bad`."""
    real, calls = getattr(module, name), []

    def wrapper(*args, **kwargs):
        calls.append(1)
        value = real(*args, **kwargs)
        return make_bad(value) if len(calls) == call else value
    monkeypatch.setattr(module, name, wrapper)


def nan_value(loss):
    return loss * float("nan")


def nan_gradient(loss):  # the value stays finite; d sqrt(x)/dx at 0 is inf, times 0: NaN
    return loss + 0 * torch.sqrt(loss - loss.detach())


def nan_estep(result):
    index, logits = result
    return index, logits * float("nan")


@pytest.mark.parametrize("fault", ["sft", "ece", "estep", "gradient"])
def test_nonfinite_value_stops_training_and_keeps_the_last_good_checkpoint(
        fault, tiny_llama, data, tmp_path, monkeypatch):
    method, extra = "cft", []
    if fault == "sft":  # the 2nd step's SFT term is NaN
        nan_at_call(monkeypatch, objective, "completion_loss", 2, nan_value)
    elif fault == "gradient":  # the 2nd step's loss is finite, its gradient NaN
        nan_at_call(monkeypatch, objective, "completion_loss", 2, nan_gradient)
    elif fault == "ece":
        method = "rcft"
        nan_at_call(monkeypatch, objective, "ece_regulariser", 2, nan_value)
    else:  # E-steps at steps 0 and 2: the second scores NaN option logits
        method, extra = "rcft", ["--estep-every-steps", "2"]
        nan_at_call(monkeypatch, estep.EStepCallback, "score_shard", 2, nan_estep)
    run = tmp_path / "run"
    text = one_line_error(*train(tiny_llama, data, run, "--method", method, "--max-steps", "3",
                                 "--save-steps", "1", *extra))
    expected = {"sft": "the SFT term (loss_sft) is nan", "ece": "the ECE regulariser (loss_ece) "
                "is nan", "gradient": "the gradient is not finite",
                "estep": "the E-step (RCFT's EM targets) scored non-finite option logits"}[fault]
    assert f"training stopped at step 2: {expected}" in text
    assert re.search(r"\(learning rate [0-9.e-]+\)", text), text
    assert f"the last good checkpoint, {run / 'checkpoints' / 'checkpoint-1'}, is kept" in text
    assert finite_checkpoints(run) == ["checkpoint-1"]
    assert not (run / "adapter").exists()


def test_weights_that_become_nonfinite_are_never_saved(tiny_llama, data, tmp_path):
    from transformers import TrainerCallback

    class PoisonAfterStep2(TrainerCallback):  # as if step 2's update overflowed the weights
        def on_step_end(self, args, state, control, model=None, **kwargs):
            if state.global_step == 2:
                with torch.no_grad():
                    next(p for p in model.parameters() if p.requires_grad).fill_(float("inf"))

    cfg = tiny_train_config(tiny_llama, data, tmp_path, method="cft", max_steps=3, save_steps=1,
                            epoch_eval_limit=0, eval_before=False)
    with pytest.raises(TrainingError, match="step 2: the weights are not finite"):
        run_training(cfg, callbacks=[PoisonAfterStep2()])
    assert finite_checkpoints(tmp_path / "run") == ["checkpoint-1"]


# ---- resume from a broken or foreign checkpoint ---------------------------------------------

@pytest.fixture(scope="module")
def finished(tiny_llama, data, tmp_path_factory):
    """A finished cft run with checkpoints 1 and 2."""
    run = tmp_path_factory.mktemp("finished") / "run"
    code, text = train(tiny_llama, data, run, "--method", "cft", *STEPS)
    assert code == 0, text
    assert finite_checkpoints(run) == ["checkpoint-1", "checkpoint-2"]
    return run


def snapshot(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def flip_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


DAMAGE = {  # damage to checkpoint-2: (what is done, what the refusal says)
    "corrupted_adapter": (lambda c: flip_byte(c / "adapter_model.safetensors"),
                          "adapter_model.safetensors is corrupted"),
    "truncated_trainer_state": (lambda c: truncate(c / "trainer_state.json"),
                                "trainer_state.json is truncated or altered"),
    "truncated_optimizer": (lambda c: truncate(c / "optimizer.pt"),
                            "optimizer.pt is truncated or altered"),
    "missing_adapter": (lambda c: (c / "adapter_model.safetensors").unlink(),
                        "adapter_model.safetensors is missing"),
    "unfinished_save": (lambda c: (c / SEAL).unlink(), "it is incomplete: no " + SEAL),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_from_a_broken_checkpoint_is_refused_and_touches_nothing(
        damage, finished, tiny_llama, data, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    do, says = DAMAGE[damage]
    do(run / "checkpoints" / "checkpoint-2")
    before = snapshot(run)
    text = one_line_error(*train(tiny_llama, data, run, "--method", "cft", *STEPS, "--resume"))
    assert f"cannot resume from {run / 'checkpoints' / 'checkpoint-2'}: {says}" in text
    assert "checkpoint-1 before it is whole: remove checkpoint-2 to resume from it" in text
    assert snapshot(run) == before


@pytest.mark.parametrize("change, says", [
    (["--learning-rate", "0.001"], "learning_rate 0.005 there, 0.001 now"),
    (["--lora-r", "8"], "lora_r 4 there, 8 now"),
    (["--method", "label_smoothing"], "method 'cft' there, 'label_smoothing' now"),
    ("other items", "train_items '24 items"),
])
def test_resume_from_another_configuration_is_refused_and_touches_nothing(
        change, says, finished, tiny_llama, data, tmp_path):
    """The run folder's config.yaml is made to agree with the new settings (as if the checkpoints
    had been copied in from another run), so that only the checkpoint's seal can tell."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    saved = yaml.safe_load((run / "config.yaml").read_text())
    if change == "other items":
        other = write_train_eval(tmp_path, make_items(20, seed=5), make_items(8, seed=2))
        saved |= {"data": str(other / "train.jsonl"), "eval_data": str(other / "eval.jsonl")}
    else:
        flag, value = change
        field = flag.removeprefix("--").replace("-", "_")
        saved[field] = type(saved[field])(value) if saved[field] is not None else value
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=True))
    before = snapshot(run)
    if change == "other items":
        code, text = train(tiny_llama, other, run, "--method", "cft", *STEPS, "--resume")
    else:
        code, text = train(tiny_llama, data, run, "--method", "cft", *STEPS, *change, "--resume")
    text = one_line_error(code, text)
    assert "it was made with another configuration: " in text and says in text
    assert "start afresh in another --out" in text
    assert snapshot(run) == before


def test_a_checkpoint_sealed_before_an_option_existed_resumes_at_its_default(
        finished, tiny_llama, data, tmp_path):
    """A seal from a calibtune without --ece-bin-prior lacks the field: a resume that leaves it at
    its default (the old behaviour) goes on; one that sets it is refused, naming it."""
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    for seal in (run / "checkpoints").glob(f"checkpoint-*/{SEAL}"):
        record = json.loads(seal.read_text())
        assert record["config"].pop("ece_bin_prior") == 0.0
        seal.write_text(json.dumps(record))
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved.pop("ece_bin_prior")
    (run / "config.yaml").write_text(yaml.safe_dump(saved, sort_keys=True))
    before = snapshot(run)
    text = one_line_error(*train(tiny_llama, data, run, "--method", "cft", *STEPS,
                                 "--ece-bin-prior", "5", "--resume"))
    assert "another configuration: ece_bin_prior not recorded there (an older calibtune), 5.0 now" in text
    assert snapshot(run) == before
    code, text = train(tiny_llama, data, run, "--method", "cft", *STEPS, "--resume")
    assert code == 0, text


def rewind_to_checkpoint_1(run, seconds):
    """Remove checkpoint-2 and make checkpoint-1's seal record `seconds` (None: no record, as an
    older calibtune sealed it); returns the seconds it recorded before."""
    shutil.rmtree(run / "checkpoints" / "checkpoint-2")
    seal_path = run / "checkpoints" / "checkpoint-1" / SEAL
    seal = json.loads(seal_path.read_text())
    before = seal.pop("seconds")
    seal_path.write_text(json.dumps(seal if seconds is None else seal | {"seconds": seconds}))
    return before


@pytest.mark.parametrize("recorded", [{"train": 1000.0, "estep": 5.0}, None])
def test_a_resumed_run_counts_the_seconds_its_checkpoint_recorded(
        recorded, finished, tiny_llama, data, tmp_path):
    """Each seal records the training seconds so far; a run resumed from checkpoint-1 reports
    those plus its own, not its own alone (an RCFT resumed after its last step reported 0.7 s).
    A checkpoint sealed before the record gives an unknown total (null), not a wrong one."""
    seals = [json.loads((finished / "checkpoints" / c / SEAL).read_text())["seconds"]
             for c in ("checkpoint-1", "checkpoint-2")]
    assert 0 < seals[0]["train"] <= seals[1]["train"]
    run = tmp_path / "run"
    shutil.copytree(finished, run)
    rewind_to_checkpoint_1(run, recorded)
    code, text = train(tiny_llama, data, run, "--method", "cft", *STEPS, "--resume")
    assert code == 0, text
    summary = json.loads((run / "summary.json").read_text())
    if recorded is None:
        assert summary["train_seconds"] is None
    else:
        own = summary["train_seconds"] - 1000.0
        assert 0 < own < 600
        resealed = json.loads((run / "checkpoints" / "checkpoint-2" / SEAL).read_text())
        assert resealed["seconds"]["train"] > 1000.0
    assert summary["estep_seconds"] == 0.0  # CFT has no E-step, whatever the seal says


def test_rcft_counts_its_e_steps_in_its_seconds_across_a_resume(tiny_llama, data, tmp_path):
    """RCFT's E-steps are part of its cost: a fresh run reports them (within its training time),
    and a run resumed from checkpoint-1 adds them to the ones its seal recorded."""
    run = tmp_path / "run"
    code, text = train(tiny_llama, data, run, "--method", "rcft", *STEPS)
    assert code == 0, text
    summary = json.loads((run / "summary.json").read_text())
    assert 0 <= summary["estep_seconds"] <= summary["train_seconds"]  # to 0.1 s: may read 0.0
    recorded = rewind_to_checkpoint_1(run, {"train": 1000.0, "estep": 5.0})
    assert recorded["estep"] > 0  # to 1 ms: the first E-step's forward passes
    code, text = train(tiny_llama, data, run, "--method", "rcft", *STEPS, "--resume")
    assert code == 0, text
    summary = json.loads((run / "summary.json").read_text())
    assert summary["estep_seconds"] >= 5.0 and summary["train_seconds"] > 1000.0


# ---- a disk that fills during a save --------------------------------------------------------

def test_a_failed_save_keeps_the_previous_checkpoint_and_resumes(tiny_llama, data, tmp_path,
                                                                 monkeypatch):
    real_save = torch.save

    def full_disk(obj, f, *args, **kwargs):
        if "checkpoint-2" in str(f):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", full_disk)
    run = tmp_path / "run"
    text = one_line_error(*train(tiny_llama, data, run, "--method", "cft", *STEPS))
    assert f"saving checkpoint {run / 'checkpoints' / 'checkpoint-2'} at step 2 failed" in text
    assert "No space left on device" in text
    assert f"{run / 'checkpoints' / 'checkpoint-1'} is intact" in text
    assert finite_checkpoints(run) == ["checkpoint-1"]  # the partial checkpoint-2 is gone
    monkeypatch.setattr(torch, "save", real_save)
    code, text = train(tiny_llama, data, run, "--method", "cft", *STEPS, "--resume")
    assert code == 0, text
    assert json.loads((run / "summary.json").read_text())["steps"] == 2


def test_a_failed_adapter_save_says_so_in_one_line(tiny_llama, data, tmp_path, monkeypatch):
    import peft.peft_model

    real = peft.peft_model.safe_save_file

    def full_disk_for_the_adapter(tensors, filename, *args, **kwargs):
        if ".adapter.tmp" in str(filename):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(peft.peft_model, "safe_save_file", full_disk_for_the_adapter)
    run = tmp_path / "run"
    text = one_line_error(*train(tiny_llama, data, run, "--method", "cft", *STEPS))
    assert f"saving {run / 'adapter'} failed" in text and "No space left on device" in text
    assert not (run / ".adapter.tmp").exists() and not (run / "adapter").exists()
    assert finite_checkpoints(run) == ["checkpoint-1", "checkpoint-2"]


def test_what_a_resume_may_change_keeps_the_held_out_sample_under_few_shot():
    """Monitoring and placement may change on --resume; with few-shot exemplars the held-out
    sample decides the training items' exemplar pool, so it may not."""
    from calibtune.training.faults import fingerprint, resume_free
    from calibtune.workflows.config import TrainRunConfig

    zero, few = asdict(TrainRunConfig()), asdict(TrainRunConfig(num_fewshot=2))
    assert {"eval_limit", "logging_steps", "max_step_tokens"} <= resume_free(zero)
    assert "eval_limit" not in resume_free(few) and "logging_steps" in resume_free(few)
    items = make_items(4)
    a, b = TrainRunConfig(eval_limit=10), TrainRunConfig(eval_limit=20)
    assert fingerprint(a, items) == fingerprint(b, items)
    assert fingerprint(replace(a, num_fewshot=2), items) != fingerprint(replace(b, num_fewshot=2),
                                                                        items)
