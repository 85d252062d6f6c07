"""Portable arithmetic (rlhf_lab/repro.py): its pins take over whatever the caller set, hold under restricted
instruction sets and thread counts, reproduce the committed fingerprint bitwise, and refuse in one line
where they cannot hold; `python -m rlhf_lab.repro check` names the first difference between two CSVs, and
experiments/exact_optimum, rerun, reproduces its committed CSV's rows bitwise by that check."""

from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhf_lab import repro
from tests.helpers import rlhf_lab

ROOT = Path(__file__).resolve().parent.parent
COMMITTED = ROOT / "benchmarks" / "results" / "rl_fingerprint_portable_8d53109.json"
FINGERPRINT = ["benchmarks/rl_fingerprint.py", "--repro", "portable", "--against", str(COMMITTED)]
FINGERPRINTED = ["ppo"]  # one run of the six: it needs the world, pretraining, SFT, collection and the RM
ONE_CORE = "one core"
EXACT_OPTIMUM = ROOT / "experiments" / "exact_optimum"
RERUN = {"ppo": "0", "dpo": "0"}  # run -> seed: its two cheapest rows that train (PPO ~5 s, DPO ~1 s)
# What the caller or the machine may change; portable mode must give the same bits under each.
RESTRICTIONS = {
    "as found": {},
    "the caller's own pins": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2", "ONEDNN_MAX_CPU_ISA": "ALL"},
    "older instructions": {
        "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",  # MKL as on a CPU without AVX
        "GLIBC_TUNABLES": "glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-AVX512F",  # libm's exp, log, pow without FMA
    },
    ONE_CORE: {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},  # and the process bound to one CPU
}


# ------------------------------------------------------------------------------------- pinning
def one_cpu() -> None:
    """Bind the process to one CPU (torch's default thread count then becomes 1)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


@pytest.mark.slow
@pytest.mark.parametrize("restriction", RESTRICTIONS)
def test_portable_fingerprint_is_the_committed_one(restriction, tmp_path):
    runs = ["--only", *FINGERPRINTED, "--home", str(tmp_path), "--out", str(tmp_path / "fingerprint.json")]
    done = subprocess.run(
        [sys.executable, *FINGERPRINT, *runs],
        cwd=ROOT,
        env={**os.environ, "WANDB_MODE": "offline", **RESTRICTIONS[restriction]},
        preexec_fn=one_cpu if restriction == ONE_CORE else None,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    for name in FINGERPRINTED:
        assert f"{name:12s} weights equal  eval equal" in done.stdout


@pytest.mark.slow
def test_a_portable_run_records_what_it_pinned(tmp_path):
    overrides = ["debug=fast", "stage=pretrain", "pretrain.max_steps=2", f"hydra.run.dir={tmp_path / 'run'}"]
    caller = {"ATEN_CPU_CAPABILITY": "avx512", "OMP_NUM_THREADS": "1"}  # the mode overrides both
    done = rlhf_lab("repro=portable", *overrides, home=tmp_path / "lab", cwd=tmp_path, **caller)
    assert done.returncode == 0, done.stderr[-3000:]
    pinned = json.loads((tmp_path / "run" / "run_info.json").read_text())["repro"]
    assert pinned["mode"] == "portable" and pinned["cpu_capability"] == "DEFAULT"
    assert pinned["threads"] == repro.THREADS and pinned["env"] == repro.PINS
    assert pinned["canary"] == pinned["canary_reference"] == repro.CANARY[torch.__version__]
    assert (tmp_path / "lab" / "portable" / "artifacts" / "pretrain").is_dir()  # apart from native ones


def test_the_mode_alone_is_refused_where_it_would_reuse_native_artifacts():
    from rlhf_lab import api
    from rlhf_lab.config import ConfigError

    with pytest.raises(
        ConfigError, match=r"repro\.mode: portable arithmetic would reuse .* paths\.world and"
    ):
        api.compose("repro.mode=portable")
    assert api.compose("repro=portable").paths.artifacts.endswith("portable/artifacts")  # the group moves it
    api.compose(
        "repro.mode=portable", "paths.world=elsewhere/w", "paths.artifacts=elsewhere/a"
    )  # or the user


def test_a_gpu_is_refused_in_one_line(tmp_path):
    done = rlhf_lab("repro=portable", "trainer.accelerator=gpu", home=tmp_path / "lab", cwd=tmp_path)
    assert done.returncode == 1
    assert "repro=portable: trainer.accelerator=gpu computes on a GPU" in done.stderr
    assert "Traceback" not in done.stderr


def test_kernels_chosen_before_pinning_are_refused(monkeypatch):
    for name in repro.PINS:
        monkeypatch.delenv(name, raising=False)  # restored after the test: later subprocesses run native
    torch.ones(3).exp()  # this process's torch has chosen its kernels
    if torch.backends.cpu.get_cpu_capability() == "DEFAULT":
        pytest.skip("this CPU's best kernels are ATen's default ones: nothing to refuse")
    with pytest.raises(repro.ReproError, match=r"^repro=portable: torch already chose its \w+ kernels"):
        repro.pin("portable")


def test_native_leaves_the_arithmetic_as_found(monkeypatch):
    monkeypatch.setenv("ATEN_CPU_CAPABILITY", "avx2")
    threads = torch.get_num_threads()
    record = repro.pin("native")
    assert os.environ["ATEN_CPU_CAPABILITY"] == "avx2" and torch.get_num_threads() == threads
    assert record["mode"] == "native" and record["blas"] == "mkl" and "canary" not in record


def test_the_env_command_prints_every_pin(capsys):
    assert repro.main(["env"]) == 0
    assert capsys.readouterr().out.splitlines() == [f"export {k}={v}" for k, v in repro.PINS.items()]


# ---------------------------------------------------------------------------------------- check
def write(path: Path, *rows: str) -> Path:
    path.write_text("".join(row + "\n" for row in rows))
    return path


def test_check_names_the_first_differing_cell(tmp_path, capsys):
    committed = write(tmp_path / "a.csv", "step,gold,kl", "0,0.5,0.0", "5,0.75,1.25", "10,0.8,2.5")
    rerun = write(tmp_path / "b.csv", "step,gold,kl", "0,0.5,0.0", "5,0.75,1.2500001", "10,0.7,2.5")
    found = repro.first_difference(committed, rerun)
    assert found == "row 2 (step=5), column kl: committed 1.25, rerun 1.2500001"
    assert repro.main(["check", str(committed), str(rerun)]) == 1
    assert "DIFFERS, row 2 (step=5), column kl" in capsys.readouterr().out


def test_check_passes_equal_files_whatever_their_timings(tmp_path, capsys):
    header = "run,seed,rl/eval/gold,rl/train/time/step,rl/train/tokens_per_second,rl/train/memory/peak_mb"
    committed = write(tmp_path / "a.csv", header, "/home/a/runs/0,0,0.125,0.61,3400.5,891.2")
    rerun = write(tmp_path / "b.csv", header, "/tmp/b/runs/0,0,0.125,0.97,2100.0,902.7")
    assert repro.first_difference(committed, rerun) is None
    assert repro.main(["check", str(committed), str(rerun)]) == 0
    assert "equal" in capsys.readouterr().out
    assert repro.first_difference(committed, rerun, ignore=()).startswith(
        "row 1 (run=/home/a/runs/0), column run"
    )


def test_check_names_other_columns_and_row_counts(tmp_path):
    committed = write(tmp_path / "a.csv", "step,gold", "0,0.5", "5,0.75")
    assert repro.first_difference(committed, write(tmp_path / "b.csv", "step,proxy", "0,0.5", "5,0.75")) == (
        "the columns differ: committed ['step', 'gold'], rerun ['step', 'proxy']"
    )
    shorter = write(tmp_path / "c.csv", "step,gold", "0,0.5")
    assert repro.first_difference(committed, shorter) == "the row counts differ: committed 2, rerun 1"


def test_check_compares_folders_file_by_file(tmp_path, capsys):
    (tmp_path / "committed").mkdir(), (tmp_path / "rerun").mkdir()
    write(tmp_path / "committed" / "runs.csv", "seed,gold", "0,0.5")
    write(tmp_path / "committed" / "fits.csv", "alpha", "1.5")
    write(tmp_path / "rerun" / "runs.csv", "seed,gold", "0,0.5")
    assert repro.main(["check", str(tmp_path / "committed"), str(tmp_path / "rerun")]) == 1
    out = capsys.readouterr().out
    assert "runs.csv: equal" in out
    assert f"fits.csv: DIFFERS, missing: {tmp_path / 'rerun' / 'fits.csv'}" in out


# ------------------------------------------------------------------------- a committed experiment
@pytest.mark.slow
@pytest.mark.skipif(
    repro.blas() != "mkl" or platform.machine() != "x86_64" or torch.__version__ not in repro.CANARY,
    reason="the committed numbers are portable arithmetic: MKL on x86-64, torch 2.13.0",
)
def test_exact_optimum_reruns_its_committed_rows_bitwise(tmp_path, capsys):
    """The write-up's rows, rerun by its own command in a fresh process (portable, its default), are the
    committed ones cell for cell, and the reader's `check` says so (about 20 s)."""
    out = tmp_path / "rerun"
    runs = ["--runs", *RERUN, "--seeds", *sorted(set(RERUN.values())), "--out", str(out)]
    done = subprocess.run(
        [sys.executable, str(EXACT_OPTIMUM / "run.py"), *runs],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    header, *rows = repro.read_rows(EXACT_OPTIMUM / "results.csv")
    kept = [row for row in rows if RERUN.get(row[0]) == row[header.index("seed")]]
    assert len(kept) == len(RERUN)
    committed = tmp_path / "committed.csv"
    with open(committed, "w", newline="") as f:
        csv.writer(f, lineterminator="\n").writerows([header, *kept])
    assert repro.read_rows(out / "results.csv") == [header, *kept]  # every cell, as a string
    assert repro.main(["check", str(committed), str(out / "results.csv")]) == 0
    assert capsys.readouterr().out == f"{committed}: equal\n"
    setting = json.loads((out / "repro.json").read_text())
    assert (setting["mode"], setting["cpu_capability"], setting["threads"]) == ("portable", "DEFAULT", 1)
    assert setting["canary"] == setting["canary_reference"]
