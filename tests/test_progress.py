"""Progress shown as log lines when standard error is not a terminal (a log file, CI, a pipe)."""

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_python(code_or_args, env=None):
    args = ["-c", code_or_args] if isinstance(code_or_args, str) else code_or_args
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})


def test_progress_off_a_terminal_is_plain_lines():
    code = ("import time\n"
            "from lsr.progress import tqdm\n"
            "for _ in tqdm(range(6), desc='encode', unit='doc'):\n"
            "    time.sleep(0.05)\n"
            "for _ in tqdm(iter(range(3)), desc='stream', unit='doc'):\n"
            "    time.sleep(0.05)\n")
    out = run_python(code, {"LSR_PROGRESS_INTERVAL": "0.01"})
    assert out.returncode == 0, out.stderr
    assert "\r" not in out.stderr and "\x1b" not in out.stderr
    lines = out.stderr.splitlines()
    encode = [line for line in lines if line.startswith("encode: ")]
    assert encode[0].startswith("encode: 0/6 (0%)") and encode[-1].startswith("encode: 6/6 (100%)")
    assert len(encode) >= 3 and len(set(encode)) == len(encode)  # several updates, none repeated
    assert [line for line in lines if line.startswith("stream: ")][-1].startswith("stream: 3 [")


def test_progress_interval_limits_the_lines():
    code = ("from lsr.progress import tqdm\n"
            "for _ in tqdm(range(10000), desc='fast'):\n"
            "    pass\n")
    out = run_python(code, {"LSR_PROGRESS_INTERVAL": "60"})
    assert out.returncode == 0, out.stderr
    assert out.stderr.splitlines() == [line for line in out.stderr.splitlines() if line.startswith("fast: ")]
    assert len(out.stderr.splitlines()) == 2  # the start and the end, nothing in between within a minute


def test_stair_benchmark_logs_its_progress_when_not_on_a_terminal():
    out = run_python(["-m", "benchmarks.stair_synthetic", "--quick", "--steps", "2", "--no-flops-off"],
                     {"LSR_PROGRESS_INTERVAL": "0.01"})
    assert out.returncode == 0, out.stderr
    err = out.stderr
    assert "\r" not in err
    assert "rendering the task" in err and "run 1 of 1: FLOPs on" in err
    assert "stage 1: 2/2 (100%)" in err and "trained 2 steps" in err
    assert "| FLOPs on" in out.stdout  # the table still goes to standard output
