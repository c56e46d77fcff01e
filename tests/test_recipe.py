"""recipes/synthetic/run.sh: stage guards, override routing, .done markers, and the real thing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from asr_kd.evaluation.report import load_results

REPO = Path(__file__).resolve().parents[1]
RECIPE = REPO / "recipes" / "synthetic" / "run.sh"
COMMANDS = [
    "asr-kd-synth",
    "asr-kd-prepare",
    "asr-kd-train",
    "asr-kd-dump-targets",
    "asr-kd-distill",
    "asr-kd-lm",
    "asr-kd-evaluate",
]
# A fake command: records its arguments, creates out_dir with a results.md and an index.json,
# and the files of asr-kd-lm's --out and --overrides-out (tuned overrides as its tune writes).
FAKE = """#!/usr/bin/env bash
echo "$(basename "$0") $*" >> "$CALLS"
echo "$(basename "$0") ${OMP_NUM_THREADS:-unset}" >> "$CALLS.threads"
for a in "$@"; do case $a in out_dir=*) mkdir -p "${a#out_dir=}"; echo TABLE > "${a#out_dir=}/results.md"; echo "{}" > "${a#out_dir=}/index.json";; esac; done
prev=
for a in "$@"; do case $prev in --out|--overrides-out) mkdir -p "$(dirname "$a")"; printf 'beam.lm_weight=0.5\nbeam.word_score=1\n' > "$a";; esac; prev=$a; done
"""


def _run(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(RECIPE), *args], env=env, capture_output=True, text=True, timeout=3000
    )


@pytest.fixture
def fake_env(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in COMMANDS:
        (bin_dir / name).write_text(FAKE)
        (bin_dir / name).chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", EXP=str(tmp_path / "exp"))
    env["CALLS"] = str(tmp_path / "calls.txt")
    # stages 4 and 5 one after the other, so the tests can read the calls in order; the
    # side-by-side default (auto) has tests of its own
    env["STUDENTS_PARALLEL"] = "no"
    return env


def _calls(env) -> list[str]:
    path = Path(env["CALLS"])
    calls = path.read_text().splitlines() if path.exists() else []
    path.unlink(missing_ok=True)
    return calls


def test_stages_run_in_order_and_route_overrides(fake_env):
    fake_env = dict(fake_env, STUDENTS_PARALLEL="auto")  # the default
    proc = _run(
        fake_env,
        "teacher:model.d_model=32",
        "students:optim.lr=2e-3",
        "eval:rtf.warmup_utts=0",
        "trainer.accelerator=cpu",
    )
    assert proc.returncode == 0, proc.stderr
    calls = _calls(fake_env)
    assert [c.split()[0] for c in calls] == COMMANDS[:5] + ["asr-kd-distill"] + [
        "asr-kd-lm"
    ] * 3 + ["asr-kd-evaluate"]
    synth, prepare, teacher, dump, *students, build, tune, hlg, evaluate = calls
    # stages 4 and 5 may run side by side (STUDENTS_PARALLEL=auto): either may log first
    ctc, kd = sorted(students, key=lambda c: "distill=none" not in c)
    assert "model.d_model=32" in teacher and "model.d_model=32" not in kd
    assert "optim.lr=2e-3" in kd and "optim.lr=2e-3" in ctc and "optim.lr=2e-3" not in teacher
    assert all("trainer.accelerator=cpu" in c for c in (teacher, kd, ctc))
    assert "trainer.accelerator=cpu" not in synth + prepare + dump + evaluate
    assert "distill=none" in ctc and "model=student_tiny" in kd and "model=student_tiny" in ctc
    # the baseline gets exactly as many updates as the KD student
    steps = [a for a in kd.split() if a.startswith("trainer.max_steps=")]
    assert steps and steps == [a for a in ctc.split() if a.startswith("trainer.max_steps=")]
    assert "ckpt.student_ctc=" in evaluate and evaluate.endswith("rtf.warmup_utts=0")
    assert proc.stdout.count("Stage ") == 8 and "TABLE" in proc.stdout
    # stage 6: the LM of the training transcripts only (no LM text in the corpus), tuned on dev
    # with the KD student at 320 ms; its graph and tuned weights reach stage 7
    assert build.startswith("asr-kd-lm build") and "--subsets train " in build
    assert "--text" not in build and "dev" not in build.replace("--subsets train", "")
    assert "--subset dev" in tune and "student_kd/checkpoints/" in tune and "--chunk-ms 320" in tune
    assert "--lm-weight 0.5 --word-score 1" in hlg
    assert (
        "decoding=[greedy,beam,beam_lm]" in evaluate
        and "runtime=[onnx,sherpa-onnx-hlg]" in evaluate
    )
    assert "beam.lm_weight=0.5 beam.word_score=1" in evaluate and "hlg.graph=" in evaluate


def test_the_students_train_side_by_side_on_half_the_cores_each(fake_env, tmp_path):
    """STUDENTS_PARALLEL=auto on 2+ cores: stages 4 and 5 at once, each with nproc/2 threads
    and its own log; =no: one after the other, on every core (OMP_NUM_THREADS untouched)."""
    env = dict(fake_env, STUDENTS_PARALLEL="yes")
    env.pop("OMP_NUM_THREADS", None)
    proc = _run(env)
    assert proc.returncode == 0, proc.stderr
    lines = Path(env["CALLS"] + ".threads").read_text().splitlines()
    half = str(max(len(os.sched_getaffinity(0)) // 2, 1))
    assert sorted(lines) == sorted(
        ["asr-kd-synth unset", "asr-kd-prepare unset", "asr-kd-train unset",
         "asr-kd-dump-targets unset", f"asr-kd-distill {half}", f"asr-kd-distill {half}",
         *["asr-kd-lm unset"] * 3, "asr-kd-evaluate unset"]
    )  # fmt: skip
    exp = Path(env["EXP"])
    for name in ("student_kd", "student_ctc"):
        assert "+ asr-kd-distill" in (exp / f"{name}.log").read_text()
    assert "side by side" in proc.stdout and proc.stdout.count("Stage ") == 8
    rerun = _run(env)  # both finished: skipped one after the other, the skips on the console
    assert rerun.returncode == 0 and "side by side" not in rerun.stdout
    assert rerun.stdout.count(" exists, skipping") == 10  # stage 6: three markers
    _calls(env)
    Path(env["CALLS"] + ".threads").unlink()
    shutil.rmtree(exp)
    proc = _run(dict(env, STUDENTS_PARALLEL="no"))
    assert proc.returncode == 0, proc.stderr
    kd, ctc = [c for c in _calls(env) if c.startswith("asr-kd-distill")]
    assert "distill=none" in ctc and "distill=none" not in kd
    assert "asr-kd-distill unset" in Path(env["CALLS"] + ".threads").read_text()
    assert not (exp / "student_kd.log").exists() and "side by side" not in proc.stdout
    assert _run(dict(env, STUDENTS_PARALLEL="maybe")).stderr == (
        "error: STUDENTS_PARALLEL=maybe: expected auto, yes or no\n"
    )


def test_a_failed_side_by_side_student_fails_the_recipe_with_its_log(fake_env, tmp_path):
    bad = Path(fake_env["PATH"].split(":")[0]) / "asr-kd-distill"
    bad.write_text(
        FAKE + 'case "$*" in *distill=none*) echo "boom: bad batch" >&2; exit 3;; esac\n'
    )
    proc = _run(dict(fake_env, STUDENTS_PARALLEL="yes"))
    assert proc.returncode == 2
    assert "boom: bad batch" in proc.stderr and "a student stage failed" in proc.stderr
    calls = _calls(fake_env)
    assert not any(c.startswith("asr-kd-evaluate") for c in calls)  # stage 7 never ran


def test_done_markers_skip_finished_stages(fake_env):
    assert _run(fake_env, "--stage", "0", "--stop-stage", "2").returncode == 0
    assert len(_calls(fake_env)) == 3
    proc = _run(fake_env, "--stage", "1", "--stop-stage", "3")
    assert proc.returncode == 0
    assert [c.split()[0] for c in _calls(fake_env)] == ["asr-kd-dump-targets"]
    assert proc.stdout.count(".done exists, skipping") == 2


def test_bad_arguments_are_refused(fake_env):
    proc = _run(fake_env, "bogus:x=1")
    assert proc.returncode != 0 and "unknown override prefix 'bogus:'" in proc.stderr
    proc = _run(fake_env, "--stage", "two")
    assert proc.returncode != 0 and "integers" in proc.stderr
    proc = _run(fake_env, "--stage", "8")  # the default --stop-stage is 7
    assert proc.returncode != 0 and "--stage 8 --stop-stage 8" in proc.stderr
    proc = _run(fake_env, "--stage", "9", "--stop-stage", "10")
    assert proc.returncode != 0 and "this recipe has stages 0-8" in proc.stderr
    assert _calls(fake_env) == []


def test_an_option_without_its_value_is_refused_in_one_line(fake_env):
    """Regression: ``run.sh --stage`` died with ``$2: unbound variable`` (set -u), status 1."""
    for args in (["--stage"], ["--stop-stage"], ["--stage", "--stop-stage", "3"]):
        proc = _run(fake_env, *args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert proc.stderr == f"error: {args[0]} needs a value: {args[0]} N\n"
    assert _calls(fake_env) == []


def _arg(call: str, key: str) -> str:
    (value,) = [a.split("=", 1)[1] for a in call.split() if a.startswith(key + "=")]
    return value


def test_a_smoke_run_warms_up_over_a_tenth_of_its_few_updates(fake_env):
    """Regression: ``TEACHER_STEPS=5 STUDENT_STEPS=5`` died at stage 2, as the demo experiment
    warms up over 200 updates and cosine decay needs more updates than that. Unset, WARMUP_STEPS
    is the experiment's 200 for the demo's long stages; set, it is used as is."""
    assert _run(dict(fake_env, TEACHER_STEPS="5", STUDENT_STEPS="40")).returncode == 0
    _, _, teacher, _, kd, ctc, *_ = _calls(fake_env)
    assert [_arg(c, "optim.warmup_steps") for c in (teacher, kd, ctc)] == ["1", "4", "4"]
    shutil.rmtree(fake_env["EXP"])
    assert _run(fake_env).returncode == 0  # the demo: 1800 and 2000 updates
    _, _, teacher, _, kd, ctc, *_ = _calls(fake_env)
    assert [_arg(c, "optim.warmup_steps") for c in (teacher, kd, ctc)] == ["200"] * 3
    assert [_arg(c, "trainer.max_steps") for c in (teacher, kd, ctc)] == ["1800", "2000", "2000"]
    shutil.rmtree(fake_env["EXP"])
    assert _run(dict(fake_env, TEACHER_STEPS="5", WARMUP_STEPS="50")).returncode == 0
    _, _, teacher, _, kd, ctc, *_ = _calls(fake_env)
    assert [_arg(c, "optim.warmup_steps") for c in (teacher, kd, ctc)] == ["50"] * 3


def test_stage_log_shows_the_overrides_in_effect(fake_env):
    """Regression: stage 4 logged ``lr 8e-3`` (STUDENT_LR) under ``students:optim.lr=2e-3``."""
    proc = _run(
        fake_env, "--stage", "2", "--stop-stage", "5", "students:optim.lr=2e-3",
        "kd:trainer.max_steps=300", "teacher:trainer.max_steps=100",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    logged = {
        line.split("Stage ")[1][0]: line for line in proc.stdout.splitlines() if "Stage " in line
    }
    assert "(teacher_small, 100 steps, warm-up 10)" in logged["2"]
    assert "(student_tiny, distill=hidden, 300 steps, warm-up 200, lr 2e-3)" in logged["4"]
    assert "(2000 steps, warm-up 200, lr 2e-3, the baseline)" in logged["5"]
    _, _, kd, ctc = _calls(fake_env)
    assert kd.endswith("optim.lr=2e-3 trainer.max_steps=300") and ctc.endswith("optim.lr=2e-3")


def test_kd_comparison_stage_distils_each_setting_and_reports_once(fake_env):
    env = dict(fake_env, COMPARE_DISTILL="none frame_kl")
    proc = _run(env, "--stage", "8", "--stop-stage", "8", "compare:optim.lr=1e-3")
    assert proc.returncode == 0, proc.stderr
    calls = _calls(env)
    assert [c.split()[0] for c in calls] == ["asr-kd-distill"] * 2 + ["asr-kd-evaluate"]
    assert all("optim.lr=1e-3" in c for c in calls[:2])
    assert "+ckpt.none=" in calls[2] and "+ckpt.frame_kl=" in calls[2]


def test_lm_stage_adds_the_corpus_lm_text_and_evaluation_needs_it_only_for_lm_rows(fake_env):
    """Stage 6 builds from the training transcripts plus the corpus's LM text when asr-kd-synth
    wrote one; stage 7 refuses beam_lm or HLG rows without stage 6, not greedy and beam ones."""
    lm_text = Path(fake_env["EXP"]) / "synth-corpus" / "librispeech-lm-norm.txt.gz"
    lm_text.parent.mkdir(parents=True)
    lm_text.write_bytes(b"")
    proc = _run(fake_env, "--stage", "7", "--stop-stage", "7")
    assert proc.returncode == 2 and "run stage 6 (the LM) first" in proc.stderr
    env = dict(fake_env, DECODING="greedy,beam", EVAL_RUNTIME="onnx")
    assert _run(env, "--stage", "7", "--stop-stage", "7").returncode == 0
    (evaluate,) = _calls(env)
    assert (
        "decoding=[greedy,beam] runtime=[onnx] out_dir=" in evaluate and "beam.lm" not in evaluate
    )
    assert _run(fake_env, "--stage", "6", "--stop-stage", "6").returncode == 0
    build, tune, hlg = _calls(fake_env)
    assert f"--subsets train --text {lm_text} --order 3" in build
    student = Path(fake_env["EXP"]) / "student_kd" / "checkpoints" / "last.ckpt"
    student.parent.mkdir(parents=True)
    student.write_text("retrained")  # a newer KD student: tuned and graphed again, not rebuilt
    assert _run(fake_env, "--stage", "6", "--stop-stage", "6").returncode == 0
    assert [c.split()[1] for c in _calls(fake_env)] == ["tune", "hlg"]


TINY = [
    "train:model.d_model=32",
    "train:model.num_layers=1",
    "train:model.num_heads=2",
    "train:model.ff_dim=64",
    "train:model.subsampling_channels=8",
    "train:trainer.val_check_interval=4",
    "train:checkpoint.every_n_steps=4",
    "train:trainer.enable_progress_bar=false",
    "eval:rtf.warmup_utts=1",
]


@pytest.mark.slow
def test_synthetic_recipe_end_to_end(tmp_path):
    venv_bin = Path(sys.executable).parent
    if not (venv_bin / "asr-kd-synth").exists():
        pytest.skip(f"console scripts not installed beside {sys.executable}")
    env = dict(os.environ, PATH=f"{venv_bin}:{os.environ['PATH']}", EXP=str(tmp_path / "exp"))
    env.update(HOURS_TRAIN="0.03", HOURS_DEV="0.015", HOURS_TEST="0.015")
    env.update(TEACHER_STEPS="4", STUDENT_STEPS="4", TOPK="4")  # warm-up capped by the recipe
    env.update(HIDDEN_LAYERS="[1]")  # TINY's teacher has one layer (the default [2,4,6]: six)
    proc = _run(env, *TINY)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = load_results(tmp_path / "exp" / "demo" / "results.json")
    rows = {(r["model"], r["mode"]) for r in results["rows"]}
    searches = ("", "-beam", "-beam_lm")
    student_modes = [m + s for s in searches for m in ("full", "stream-320ms")]
    assert rows == {
        *(("teacher", "full" + s) for s in searches),
        *((name, mode) for name in ("student_kd", "student_ctc") for mode in student_modes),
        ("student_kd", "stream-320ms-sherpa-onnx-hlg"),
        ("student_ctc", "stream-320ms-sherpa-onnx-hlg"),
    }
    assert all(r["rtf"] > 0 for r in results["rows"])  # every decoding mode is timed
    tuned = (tmp_path / "exp" / "lm" / "tuned.txt").read_text().split()
    assert results["meta"]["beam"]["lm_weight"] == float(tuned[0].split("=")[1])
    assert results["meta"]["hlg"]["graphs"] == [str(tmp_path / "exp" / "lm" / "HLG.fst")]
    assert "| student_kd | stream-320ms |" in proc.stdout  # the table is printed at the end
    for name in ("results.md", "wer_vs_latency.png", "wer_vs_macs.png"):
        assert (tmp_path / "exp" / "demo" / name).is_file()
    rerun = _run(env, *TINY)  # everything done: every stage is skipped
    assert rerun.returncode == 0 and rerun.stdout.count(" exists, skipping") == 10
    json.loads((tmp_path / "exp" / "demo" / "results.json").read_text())
    shutil.rmtree(tmp_path / "exp" / "synth-corpus", ignore_errors=True)


def _checkpoint(out_dir: Path, mtime: float) -> Path:
    ckpt = out_dir / "checkpoints" / "last.ckpt"
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    ckpt.write_text("weights")
    os.utime(ckpt, (mtime, mtime))
    return ckpt


def test_a_retrained_teacher_redoes_its_soft_targets_and_the_kd_student(fake_env):
    """Regression: a rerun after retraining the teacher kept the old targets and students; then
    the stale KD student was rerun over its old last.ckpt, which asr-kd-distill refuses."""
    assert _run(fake_env).returncode == 0
    _calls(fake_env)
    exp = Path(fake_env["EXP"])
    old = (exp / "targets" / ".done").stat().st_mtime
    for done in exp.glob("*/.done"):
        os.utime(done, (old, old))
    for student in ("student_kd", "student_ctc"):
        _checkpoint(exp / student, old)
    _checkpoint(exp / "teacher", old + 10)  # retrained after the targets were dumped
    proc = _run(fake_env, "--stage", "3", "--stop-stage", "5")
    assert proc.returncode == 0, proc.stderr
    dump, kd = _calls(fake_env)  # the CTC-only student reads no targets: still done
    assert dump.startswith("asr-kd-dump-targets") and "distill=hidden" in kd
    assert "resume=true" not in kd and not (exp / "student_kd" / "checkpoints").exists()
    assert (exp / "student_ctc" / "checkpoints" / "last.ckpt").exists()


def test_an_interrupted_training_stage_is_resumed(fake_env):
    """Regression: a stage stopped before its .done marker was rerun without resume=true, which
    asr-kd-train refuses over an existing last.ckpt."""
    exp = Path(fake_env["EXP"])
    _checkpoint(exp / "teacher", 0.0)
    proc = _run(fake_env, "--stage", "2", "--stop-stage", "2", "teacher:trainer.max_steps=9")
    assert proc.returncode == 0, proc.stderr
    (teacher,) = _calls(fake_env)
    assert teacher.endswith("resume=true trainer.max_steps=9")  # the user's overrides still last
    assert "resuming the unfinished run" in proc.stdout
    assert _run(fake_env, "--stage", "2", "--stop-stage", "2").returncode == 0
    assert _calls(fake_env) == []  # finished now: skipped


# A fake launcher: records its own options and the command it was given, runs nothing.
LAUNCHER = '#!/usr/bin/env bash\necho "launch $*" >> "$CALLS"\n'
NODE = "--nnodes=2 --nproc-per-node=8 --node-rank={} --master-addr=node0 --master-port=29500"


def _launch_env(env: dict, rank: int) -> dict:
    launcher = Path(env["PATH"].split(":")[0]) / "launch"
    launcher.write_text(LAUNCHER)
    launcher.chmod(0o755)
    return dict(env, LAUNCH="launch " + NODE.format(rank), STUDENTS_PARALLEL="auto")


def _tree(root: Path) -> dict[str, int]:
    """Every path under root with its mtime in ns (what a worker node must leave untouched)."""
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*")}


def test_only_the_training_commands_run_under_launch_once_per_stage(fake_env):
    env = _launch_env(fake_env, rank=0)
    proc = _run(env, "students:optim.lr=2e-3")
    assert proc.returncode == 0, proc.stderr
    calls = _calls(env)
    launch = "launch " + NODE.format(0) + " "
    assert [c.split()[0] for c in calls] == [
        "asr-kd-synth", "asr-kd-prepare", "launch", "asr-kd-dump-targets", "launch", "launch",
        "asr-kd-lm", "asr-kd-lm", "asr-kd-lm", "asr-kd-evaluate",
    ]  # fmt: skip
    teacher, kd, ctc = (c for c in calls if c.startswith("launch"))
    assert teacher.startswith(launch + "asr-kd-train model=teacher_small")
    assert kd.startswith(launch + "asr-kd-distill") and "distill=hidden" in kd  # one at a time
    assert ctc.startswith(launch + "asr-kd-distill") and ctc.endswith("optim.lr=2e-3")
    exp = Path(env["EXP"])
    assert all(
        (exp / name / ".done").is_file() for name in ("teacher", "student_kd", "student_ctc")
    )
    # node 0 says how the other nodes join each training stage
    hint = f'LAUNCH="launch {NODE.format("RANK")}" bash {RECIPE} students:optim.lr=2e-3'
    assert f"{hint} --stage 2 --stop-stage 2 (RANK: the node's rank)" in proc.stdout
    assert f"{hint} --stage 5 --stop-stage 5" in proc.stdout
    proc = _run(dict(env, STUDENTS_PARALLEL="yes"), "--stage", "4")
    assert proc.returncode == 2 and proc.stderr.startswith(
        "error: STUDENTS_PARALLEL=yes with LAUNCH"
    )
    proc = _run(dict(env, LAUNCH="torchrun --nnodes=2 --node-rank=0"))  # runs python FILE
    assert proc.returncode == 2 and proc.stderr.startswith("error: LAUNCH=") and not _calls(env)
    assert "add --no-python" in proc.stderr


def test_a_worker_node_launches_the_same_training_commands_and_writes_nothing(fake_env):
    """A torchrun LAUNCH with --node-rank 1: the training commands of node 0 (resume decisions
    included), node 0's markers awaited for the other stages, no file written or removed."""
    node0, worker = _launch_env(fake_env, rank=0), _launch_env(fake_env, rank=1)
    exp = Path(fake_env["EXP"])
    assert _run(node0, "--stage", "0", "--stop-stage", "1").returncode == 0
    _checkpoint(exp / "teacher", time.time() - 100)  # stage 2 was stopped midway
    _calls(node0)
    before = _tree(exp)
    proc = _run(worker, "--stage", "0", "--stop-stage", "2", "teacher:trainer.max_steps=9")
    assert proc.returncode == 0, proc.stderr
    (teacher,) = _calls(worker)
    assert teacher.startswith("launch " + NODE.format(1) + " asr-kd-train")
    assert teacher.endswith("resume=true trainer.max_steps=9")  # node 0's decision, node 0's order
    assert "Stage 1: done by node 0" in proc.stdout and "each other node joins" not in proc.stdout
    assert _tree(exp) == before
    # node 0's stage 2 runs the same command, then marks it done
    assert (
        _run(node0, "--stage", "2", "--stop-stage", "2", "teacher:trainer.max_steps=9").returncode
        == 0
    )
    assert _calls(node0) == [teacher.replace(NODE.format(1), NODE.format(0))]
    # a student whose targets are newer (a retrained teacher): node 0 removes it and starts afresh
    (exp / "targets").mkdir()
    (exp / "targets" / "index.json").write_text("{}")
    _checkpoint(exp / "student_kd", time.time() - 50)
    (exp / "student_kd" / ".done").touch()
    os.utime(exp / "student_kd" / ".done", (time.time() - 50,) * 2)
    before = _tree(exp)
    proc = _run(worker, "--stage", "4", "--stop-stage", "4")
    assert proc.returncode == 0, proc.stderr
    (kd,) = _calls(worker)
    assert "asr-kd-distill" in kd and "resume=true" not in kd and _tree(exp) == before
    (exp / "student_kd" / ".done").unlink()  # the same, stopped midway: not resumed either
    assert _run(worker, "--stage", "4", "--stop-stage", "4").returncode == 0
    (kd,) = _calls(worker)
    assert "asr-kd-distill" in kd and "resume=true" not in kd


def test_a_worker_node_waits_for_node_0s_current_marker(fake_env):
    worker = dict(_launch_env(fake_env, rank=1), LAUNCH_POLL_S="0.1")
    exp = Path(fake_env["EXP"])
    teacher = _checkpoint(exp / "teacher", time.time())
    (exp / "targets").mkdir()
    marker = exp / "targets" / ".done"
    marker.touch()
    os.utime(marker, (time.time() - 10,) * 2)  # older than the teacher: node 0 dumps again
    args = ["bash", str(RECIPE), "--stage", "3", "--stop-stage", "3"]
    proc = subprocess.Popen(args, env=worker, stdout=subprocess.PIPE, text=True)
    with pytest.raises(subprocess.TimeoutExpired):
        proc.wait(timeout=1.5)
    marker.touch()  # node 0's new dump is done
    assert proc.wait(timeout=20) == 0
    out = proc.stdout.read()
    assert f"Stage 3: node 0 runs it; waiting for {marker}" in out
    assert f"Stage 3: done by node 0 ({marker})" in out
    assert _calls(worker) == [] and teacher.is_file() and marker.is_file()


LIBRI = REPO / "recipes" / "librispeech" / "run.sh"
LIBRI_SUBSETS = [
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
]


def _libri(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(LIBRI), *args], env=env, capture_output=True, text=True)


def _libri_layout(root: Path, subsets: list[str]) -> Path:
    """Subset folders with one <speaker>/<chapter>/*.trans.txt each (what the recipe checks)."""
    for subset in subsets:
        chapter = root / subset / "19" / "198"
        chapter.mkdir(parents=True)
        (chapter / "19-198.trans.txt").write_text("19-198-0000 HELLO\n")
    return root


def test_librispeech_recipe_points_to_openslr_when_data_is_missing(fake_env, tmp_path):
    proc = _libri(fake_env, str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "https://www.openslr.org/12" in proc.stderr
    assert "LibriSpeech directory not found" in proc.stderr
    corpus = _libri_layout(tmp_path / "LibriSpeech", [s for s in LIBRI_SUBSETS if "360" not in s])
    proc = _libri(fake_env, str(corpus))
    assert proc.returncode == 2 and "subset train-clean-360 missing" in proc.stderr
    assert 'TRAIN_SUBSETS="train-clean-100"' in proc.stderr
    assert _calls(fake_env) == []


def test_librispeech_recipe_runs_its_stages_in_order(fake_env, tmp_path):
    corpus = _libri_layout(tmp_path / "LibriSpeech", LIBRI_SUBSETS)
    proc = _libri(fake_env, str(corpus), "kd:distill.alpha=0.7", "students:trainer.max_steps=7")
    assert proc.returncode == 0, proc.stderr
    assert "(student_small, distill=hidden, 7 steps, warm-up 25000)" in proc.stdout
    calls = _calls(fake_env)
    names = [c.split()[0] for c in calls]
    assert names == ["asr-kd-prepare", "asr-kd-train", "asr-kd-dump-targets"] + [
        "asr-kd-distill",
        "asr-kd-distill",
        *["asr-kd-lm"] * 3,
        "asr-kd-evaluate",
    ]
    prepare, teacher, dump, kd, ctc, build, tune, hlg, evaluate = calls
    assert "tokenizer=bpe" in prepare and "tokenizer.vocab_size=500" in prepare
    assert "model=teacher_large" in teacher and "trainer=multi_gpu" in teacher
    assert "model=student_small" in kd and "distill=none" in ctc
    assert all("optim.warmup_steps=25000" in c for c in (teacher, kd, ctc))
    assert "distill.alpha=0.7" in kd and "distill.alpha=0.7" not in ctc
    steps = [a for a in kd.split() if a.startswith("trainer.max_steps=")]
    assert steps and steps == [a for a in ctc.split() if a.startswith("trainer.max_steps=")]
    assert "subsets=[test-clean,test-other,dev-clean,dev-other]" in evaluate
    # no openslr 11 files beside the corpus: a 3-gram of the three training subsets' transcripts
    assert "--subsets train-clean-100 train-clean-360 train-other-500 --order 3" in build
    assert "--subset dev-clean" in tune and "--chunk-ms 320" in tune and "--lexicon" not in tune
    assert "decoding=[greedy,beam_lm] runtime=[onnx,sherpa-onnx-hlg]" in evaluate
    built = Path(fake_env["EXP"]) / "lm" / "3gram.arpa"
    assert _arg(evaluate, "beam.lm") == str(built) and f"--lm {built} " in hlg
    proc = _libri(fake_env, str(corpus), "--stage", "8")
    assert proc.returncode != 0 and "this recipe has stages 0-7" in proc.stderr


def test_librispeech_lm_stage_takes_openslr_11_files_as_downloaded(fake_env, tmp_path):
    """LM_DIR with openslr 11's pruned 3-gram and lexicon: nothing is built; both are tuned on
    dev-clean and used by the graph and the evaluation. Only the LM text: built from it too."""
    corpus = _libri_layout(tmp_path / "LibriSpeech", LIBRI_SUBSETS)
    openslr = tmp_path / "openslr-11"
    openslr.mkdir()
    for name in ("3-gram.pruned.1e-7.arpa.gz", "librispeech-lexicon.txt"):
        (openslr / name).write_text("")
    env = dict(fake_env, LM_DIR=str(openslr))
    assert _libri(env, str(corpus), "--stage", "6", "--stop-stage", "7").returncode == 0
    tune, hlg, evaluate = _calls(env)
    lm, lexicon = openslr / "3-gram.pruned.1e-7.arpa.gz", openslr / "librispeech-lexicon.txt"
    assert f"--lm {lm} --lexicon {lexicon}" in tune and f"--lm {lm} " in hlg
    assert f"--lexicon {lexicon}" in hlg and "--lm-weight 0.5 --word-score 1" in hlg
    assert f"beam.lm={lm} beam.lexicon={lexicon} beam.lm_weight=0.5 beam.word_score=1" in evaluate
    shutil.rmtree(fake_env["EXP"])
    (openslr / "3-gram.pruned.1e-7.arpa.gz").unlink()
    (openslr / "librispeech-lm-norm.txt.gz").write_text("")
    assert _libri(env, str(corpus), "--stage", "6", "--stop-stage", "6").returncode == 0
    build, *_ = _calls(env)
    assert f"--text {openslr / 'librispeech-lm-norm.txt.gz'} --order 3" in build


def test_librispeech_recipe_defaults_to_hidden_kd_from_one_compressed_dump(fake_env, tmp_path):
    """Regression: stage 3 passed no hidden_layers (DISTILL=hidden then failed at stage 4, after
    the whole dump). Now: one dump of every training subset with the paired teacher layers and a
    codec fitted on a training subset; the pairs go to the KD student only; both students are
    validated streaming on every dev subset."""
    corpus = _libri_layout(tmp_path / "LibriSpeech", LIBRI_SUBSETS)
    assert _libri(fake_env, str(corpus)).returncode == 0
    _, teacher, dump, kd, ctc, *_ = _calls(fake_env)
    assert _arg(dump, "subsets") == "[train-clean-100,train-clean-360,train-other-500]"
    assert _arg(dump, "hidden_layers") == "[6,11,16]" == _arg(kd, "distill.teacher_layers")
    assert _arg(kd, "distill.student_layers") == "[4,7,10]" and "distill=hidden" in kd
    assert _arg(dump, "hidden_compress") == "pca32"
    assert _arg(dump, "hidden_fit_subset") == "train-clean-100"
    assert "layers" not in ctc and "val_chunk_size" not in teacher
    for call in (teacher, kd, ctc):
        assert _arg(call, "data.dev_subset") == "[dev-clean,dev-other]"
    assert _arg(kd, "val_chunk_size") == "8" == _arg(ctc, "val_chunk_size")  # 320 ms / 40 ms
    shutil.rmtree(fake_env["EXP"])
    env = dict(fake_env, DISTILL="frame_kl", VAL_CHUNK_MS="")
    assert _libri(env, str(corpus)).returncode == 0
    _, _, dump, kd, ctc, *_ = _calls(fake_env)
    assert "hidden_" not in dump and "layers" not in kd
    assert "val_chunk_size" not in kd + ctc
    proc = _libri(dict(fake_env, VAL_CHUNK_MS="300"), str(corpus))
    assert proc.returncode == 2
    assert proc.stderr == "error: VAL_CHUNK_MS=300: expected a multiple of the 40 ms frame\n"


def test_avg_averages_every_training_stage_alike_and_the_averaged_checkpoints_are_used(fake_env):
    assert _run(fake_env).returncode == 0  # AVG unset: no averaging, last.ckpt everywhere
    calls = _calls(fake_env)
    assert not any("average." in c or "averaged.ckpt" in c for c in calls)
    shutil.rmtree(fake_env["EXP"])
    assert _run(dict(fake_env, AVG="5")).returncode == 0
    _, _, teacher, dump, kd, ctc, _, tune, _, evaluate = _calls(fake_env)
    for call in (teacher, kd, ctc):  # the fair-comparison rule: the same averaging for all three
        assert (_arg(call, "average.last_n"), _arg(call, "average.every_n_steps")) == ("5", "100")
    assert _arg(dump, "teacher_ckpt").endswith("/teacher/checkpoints/averaged.ckpt")
    assert "/student_kd/checkpoints/averaged.ckpt " in tune  # the LM is tuned on it too
    for name in ("teacher", "student_kd", "student_ctc"):
        assert _arg(evaluate, f"ckpt.{name}").endswith(f"/{name}/checkpoints/averaged.ckpt")
    shutil.rmtree(fake_env["EXP"])
    assert _run(dict(fake_env, AVG="5", CKPT="last.ckpt")).returncode == 0  # CKPT still wins
    assert "averaged.ckpt" not in _calls(fake_env)[-1]
    proc = _run(dict(fake_env, AVG="five"))
    assert proc.returncode == 2 and proc.stderr == (
        "error: AVG=five: expected how many checkpoints to average (0 = off)\n"
    )
    assert _calls(fake_env) == []


def test_librispeech_recipe_averages_the_teacher_and_both_students_alike(fake_env, tmp_path):
    corpus = _libri_layout(tmp_path / "LibriSpeech", LIBRI_SUBSETS)
    for knobs, last_n in (({}, "5"), ({"AVG": "10"}, "10")):  # averaging is on by default
        shutil.rmtree(fake_env["EXP"], ignore_errors=True)
        assert _libri(dict(fake_env, **knobs), str(corpus)).returncode == 0
        _, teacher, dump, kd, ctc, _, tune, _, evaluate = _calls(fake_env)
        for call in (teacher, kd, ctc):
            assert (_arg(call, "average.last_n"), _arg(call, "average.every_n_steps")) == (
                last_n,
                "5000",
            )
        assert _arg(dump, "teacher_ckpt").endswith("averaged.ckpt")
        assert "/student_kd/checkpoints/averaged.ckpt " in tune
        for name in ("teacher", "student_kd", "student_ctc"):
            assert _arg(evaluate, f"ckpt.{name}").endswith(f"/{name}/checkpoints/averaged.ckpt")


def test_synth_yes_writes_a_librispeech_shaped_corpus_at_stage_0_and_runs_on_it(fake_env):
    exp = Path(fake_env["EXP"])
    _libri_layout(exp / "synth-corpus" / "LibriSpeech", LIBRI_SUBSETS)  # the fake writes none
    env = dict(fake_env, SYNTH="yes")
    proc = _libri(env, "synth:hours.dev-clean=0.5", "prepare:num_jobs=3")
    assert proc.returncode == 0, proc.stderr
    synth, prepare, *_ = calls = _calls(env)
    assert len(calls) == 10 and "Stage 0: synthesize a LibriSpeech-shaped corpus" in proc.stdout
    assert synth.startswith("asr-kd-synth corpus=librispeech")
    assert _arg(synth, "out_dir") == str(exp / "synth-corpus")
    assert synth.endswith("hours.dev-clean=0.5") and "hours" not in prepare
    assert _arg(prepare, "corpus_dir") == str(exp / "synth-corpus" / "LibriSpeech")
    assert _libri(env).stdout.count(" exists, skipping") == 10  # a rerun redoes nothing
    proc = _libri(env, "/data/LibriSpeech")
    assert proc.returncode == 2 and "give no directory" in proc.stderr
    proc = _libri(dict(fake_env, SYNTH="maybe"), "/data/LibriSpeech")
    assert proc.returncode == 2 and proc.stderr.startswith("error: SYNTH=maybe: expected yes")
    assert _calls(env) == []


def test_librispeech_recipe_with_a_public_teacher_skips_teacher_training(fake_env, tmp_path):
    corpus = _libri_layout(tmp_path / "LibriSpeech", LIBRI_SUBSETS)
    teacher = "hf:facebook/wav2vec2-conformer-rope-large-960h-ft"
    proc = _libri(dict(fake_env, TEACHER=teacher), str(corpus))
    assert proc.returncode == 0, proc.stderr
    assert f"Stage 2: TEACHER={teacher} given: no teacher to train" in proc.stdout
    calls = _calls(fake_env)
    names = [c.split()[0] for c in calls]
    assert names == ["asr-kd-prepare", "asr-kd-dump-targets"] + ["asr-kd-distill"] * 2 + [
        *["asr-kd-lm"] * 3,
        "asr-kd-evaluate",
    ]
    prepare, *dumps, kd, ctc, _, _, _, evaluate = calls
    assert f"tokenizer=from_teacher tokenizer.teacher={teacher}" in prepare
    assert "tokenizer=bpe" not in prepare
    assert all(f"teacher_ckpt={teacher}" in c for c in (*dumps, kd, ctc))
    assert f"ckpt.teacher={teacher}" in evaluate
    proc = _libri(dict(fake_env, TEACHER="exp/teacher.ckpt"), str(corpus))
    assert proc.returncode == 2 and "expected hf:<save_pretrained dir" in proc.stderr


STEP_TIME = REPO / "recipes" / "synthetic" / "step_time.sh"
# A fake asr-kd-distill: records its arguments, prints a run summary whose fit_seconds is 2.0,
# or 3.0 for distill=hidden.
FAKE_DISTILL = """#!/usr/bin/env bash
echo "$*" >> "$CALLS"
case "$*" in *distill=hidden*) s=3.0;; *) s=2.0;; esac
echo "{'global_step': 4, 'fit_seconds': $s, 'bad_batches': 0}"
"""


def test_step_time_tables_each_method_against_frame_kl(tmp_path):
    bin_dir, exp = tmp_path / "bin", tmp_path / "exp"
    bin_dir.mkdir()
    (bin_dir / "asr-kd-distill").write_text(FAKE_DISTILL)
    (bin_dir / "asr-kd-distill").chmod(0o755)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", EXP=str(exp), STEPS="4")
    env["CALLS"] = str(tmp_path / "calls.txt")
    proc = subprocess.run(["bash", str(STEP_TIME)], env=env, capture_output=True, text=True)
    assert (
        proc.returncode == 2 and proc.stderr.startswith("error: ") and "stages 0-3" in proc.stderr
    )
    for path in ("data/.done", "teacher/checkpoints/last.ckpt", "targets/index.json"):
        (exp / path).parent.mkdir(parents=True, exist_ok=True)
        (exp / path).touch()
    args = [
        "frame_kl",
        "hidden|targets_dir=x;data.train_subset=[train,extra]",
        "wide:frame_kl|distill.k=4",
    ]
    proc = subprocess.run(["bash", str(STEP_TIME), *args], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = [
        line for line in proc.stdout.splitlines() if line.startswith("| ") and "---" not in line
    ]
    assert rows[1:] == [
        "| frame_kl | 0.5000 | 1.00 |",
        "| hidden | 0.7500 | 1.50 |",
        "| wide | 0.5000 | 1.00 |",
    ]
    frame_kl, hidden, wide = Path(env["CALLS"]).read_text().splitlines()
    assert "distill=hidden" in hidden and "targets_dir=x" in hidden.split()[-2:]
    assert "data.train_subset=[train,extra]" in hidden.split()
    assert "distill=frame_kl" in wide and wide.split()[-1] == "distill.k=4"
    assert all(
        "trainer.max_steps=4" in c and "trainer.limit_val_batches=0" in c
        for c in (frame_kl, hidden, wide)
    )


def test_librispeech_recipe_prepares_speed_perturbed_copies_unless_speed_perturb_is_empty(
    fake_env, tmp_path
):
    corpus = _libri_layout(tmp_path / "LibriSpeech", LIBRI_SUBSETS)
    assert _libri(fake_env, str(corpus), "--stop-stage", "1").returncode == 0
    (prepare,) = _calls(fake_env)
    assert _arg(prepare, "speed_perturb") == "[0.9,1.1]"
    shutil.rmtree(fake_env["EXP"])
    env = dict(fake_env, SPEED_PERTURB="")
    assert _libri(env, str(corpus), "--stop-stage", "1").returncode == 0
    (prepare,) = _calls(fake_env)
    assert _arg(prepare, "speed_perturb") == "[]"
