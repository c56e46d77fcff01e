"""The Hydra commands (asr_kd/cli/_command.py): ``--help`` lists only the command's own groups; a
user error is one ``error:`` line on stderr and status 2, before the run (a bad override) or in it
(a missing file, a foreign checkpoint), with no traceback and no empty run directory left behind;
``HYDRA_FULL_ERROR=1`` still shows the traceback.

The specific errors run the console entry (``python -m asr_kd.cli.<command>``) in a subprocess;
the per-command checks call ``main()`` in this process (the same code, a few seconds less each).
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException

from asr_kd.config import command_name
from asr_kd.errors import ConfigError
from tests.helpers.console import one_error_line, only_hydra_leftovers, run_console

COMMANDS = ["synth", "prepare", "train", "dump_targets", "distill", "evaluate", "export"]
# The groups each command's config has, and the presets (+experiment) that fit it.
GROUPS = {
    "synth": {"corpus"},
    "prepare": {"tokenizer"},
    "train": {"data", "model", "trainer", "experiment"},
    "dump_targets": {"data"},
    "distill": {"data", "model", "trainer", "distill", "experiment"},
    "evaluate": set(),
    "export": set(),
}


@pytest.fixture
def in_process(monkeypatch, capsys, tmp_path):
    """``in_process(command, *args) -> (status, stdout, stderr)``: the command's ``main()`` with
    ``sys.argv`` set, run from ``tmp_path``; Hydra's logging set-up is undone after."""
    monkeypatch.delenv("HYDRA_FULL_ERROR", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(command: str, *args: str) -> tuple[int, str, str]:
        main = importlib.import_module(f"asr_kd.cli.{command}").main
        monkeypatch.setattr(sys, "argv", [command_name(command), *args])
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        try:
            main()
            status = 0
        except SystemExit as exit_:
            status = exit_.code or 0
        finally:
            for handler in set(root.handlers) - set(handlers):
                handler.close()
            root.handlers[:] = handlers
            root.setLevel(level)
        captured = capsys.readouterr()
        return status, captured.out, captured.err

    return run


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_only_the_groups_the_command_has(command, in_process):
    """Regression: every command's --help listed all config groups with the example
    ``model=student_tiny distill=topk``, which synth, prepare, dump-targets, evaluate and export
    reject."""
    status, out, _ = in_process(command, "--help")
    assert status == 0 and out.startswith(f"{command_name(command)}: ")
    section = out.split("== Configuration groups ==\n")[1].split("== Config ==")[0]
    listed = set(re.findall(r"^\+?(\w+) [\[(]", section, flags=re.M))
    example = re.search(r"e\.g\. (.*)", section)
    assert listed == GROUPS[command]
    if GROUPS[command] - {"data"}:  # data has one option: no example of another
        assert set(re.findall(r"\+?(\w+)=", example[1])) == GROUPS[command] - {"data"}
    elif not GROUPS[command]:
        assert example is None and "has no config groups" in section
    assert "HYDRA_FULL_ERROR=1" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unknown_key_is_one_error_line_with_status_2(command, in_process, tmp_path):
    """Regression: Hydra printed several lines (and advice to add the key with +) and exited 1."""
    prog = command_name(command)
    status, out, err = in_process(command, "no_such_key=1")
    assert status == 2 and out == ""
    assert err == (
        f"error: `no_such_key=1`: {prog} has no config group or key 'no_such_key'; "
        f"`{prog} --help` lists the groups and keys\n"
    )
    assert list(tmp_path.iterdir()) == []  # refused before Hydra made a run directory


def test_other_config_mistakes_are_one_line_naming_the_value(in_process, prepared_data_dir):
    cases = {
        ("train", "model=nope"): "config group 'model' of asr-kd-train has no option 'nope' "
        "(options: hf_parakeet_small, student_small, student_tiny, teacher_large, teacher_small)",
        ("train", "optim.lr=[1e-3"): "cannot parse the override `optim.lr=[1e-3`",
        ("synth",): "out_dir is required and not set: add out_dir=<value>",
        ("evaluate", "out_dir=run"): "data.dir is required and not set: add data.dir=<value>",
    }
    for args, message in cases.items():
        status, _, err = in_process(*args)
        assert status == 2 and message in err and len(err.splitlines()) == 1, (args, err)


def test_a_value_of_the_wrong_kind_is_refused_before_the_run(
    in_process, prepared_data_dir, tmp_path
):
    """Regression: ``optim.lr=abc`` (or ``optim=x``) was taken as a string and failed deep in the
    optimizer with a traceback."""
    data = f"data.dir={prepared_data_dir}"
    run = tmp_path / "run"
    status, _, err = in_process(
        "train", data, f"out_dir={run}", "+experiment=demo_synthetic", "optim.lr=abc"
    )
    prog = "asr-kd-train"
    assert status == 2 and err == (
        f"error: `optim.lr=abc`: optim.lr takes a number (default 0.002); `{prog} --help` lists "
        "the groups and keys\n"
    )
    assert not run.exists()  # the refused run's directory is gone
    status, _, err = in_process("train", data, f"out_dir={run}", "optim=x")
    assert status == 2 and "`optim=x`: optim takes keys (lr, weight_decay, betas, eps, ...)" in err
    status, _, err = in_process("evaluate", data, f"out_dir={run}", "plots=maybe")
    assert status == 2 and "`plots=maybe`: plots takes true or false (default True)" in err


def test_a_refused_run_removes_only_a_run_dir_it_made(in_process, tmp_path):
    """Regression: a refused run left ``out_dir`` holding only ``.hydra/`` and an empty log."""
    run = tmp_path / "run"
    args = ("evaluate", "data.dir=somewhere", f"out_dir={run}")  # no checkpoints given
    status, _, err = in_process(*args)
    assert status == 2 and err.startswith("error: no checkpoints to evaluate: pass ckpt.")
    assert not run.exists()
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    status, _, err = in_process(*args)
    assert status == 2 and (run / "notes.txt").read_text() == "mine"
    assert (run / ".hydra" / "config.yaml").is_file()
    assert "error: no checkpoints to evaluate" in (run / "evaluate.log").read_text()


def test_hydra_full_error_shows_the_traceback(in_process, monkeypatch, tmp_path):
    monkeypatch.setenv("HYDRA_FULL_ERROR", "1")
    with pytest.raises(ConfigCompositionException, match="Could not override 'no_such_key'"):
        in_process("evaluate", "no_such_key=1")
    with pytest.raises(ConfigError, match="no checkpoints to evaluate"):
        in_process("evaluate", "data.dir=somewhere", f"out_dir={tmp_path / 'run'}")


def test_unknown_option_through_the_console_entry(tmp_path):
    proc = run_console("evaluate", "distill=topk", cwd=tmp_path)
    assert one_error_line(proc) == (
        "error: `distill=topk`: asr-kd-evaluate has no config group or key 'distill'; "
        "`asr-kd-evaluate --help` lists the groups and keys"
    )


class _Payload:
    """Unpickles by calling the builtin ``open(marker, "w")``: a file appears if it ever runs."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_a_checkpoint_carrying_code_is_refused_without_running_it(tmp_path, prepared_data_dir):
    """Regression: the refusal was torch's traceback, advising ``weights_only=False``."""
    marker = tmp_path / "payload_ran"
    evil = tmp_path / "evil.ckpt"
    meta = {"model_config": {}, "role": "teacher", "extra": _Payload(marker)}
    torch.save({"state_dict": {"model.w": torch.ones(2)}, "asr_kd": meta}, evil)
    proc = run_console(
        "evaluate", f"ckpt.teacher={evil}", f"data.dir={prepared_data_dir}",
        f"out_dir={tmp_path / 'eval'}", cwd=tmp_path,
    )  # fmt: skip
    line = one_error_line(proc, f"cannot read {evil} as a torch checkpoint: it holds objects")
    assert "re-save it with asr_kd or give the right file" in line
    assert "weights_only" not in proc.stdout + proc.stderr
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real: an unrestricted load runs it
    assert marker.exists()


def test_a_missing_data_dir_or_subset_is_one_line(tmp_path, prepared_data_dir, make_checkpoint):
    run = tmp_path / "run"
    proc = run_console("train", f"data.dir={tmp_path / 'nowhere'}", f"out_dir={run}", cwd=tmp_path)
    one_error_line(proc, f"data dir {tmp_path / 'nowhere'} does not exist: run asr-kd-prepare")
    assert not run.exists()
    ckpt = make_checkpoint(tmp_path / "student.ckpt", streaming=True)
    proc = run_console(
        "evaluate", f"ckpt.student_kd={ckpt}", f"data.dir={prepared_data_dir}",
        "subsets=[test,nope]", f"out_dir={run}", cwd=tmp_path,
    )  # fmt: skip
    one_error_line(proc, "no prepared subset 'nope'")
    assert not only_hydra_leftovers(run)


def test_an_old_spelling_is_one_error_line_naming_the_new_one(in_process, tmp_path):
    status, out, err = in_process("dump_targets", "teacher_ckpt=t.ckpt", "subset=train")
    assert status == 2 and out == ""
    assert err == (
        "error: subset=train: asr-kd-dump-targets spells 'subset' as 'subsets' now; "
        "pass subsets=train\n"
    )
    assert list(tmp_path.iterdir()) == []
