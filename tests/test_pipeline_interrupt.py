"""Strict pipeline start-up and Ctrl-C: an empty config is refused; Ctrl-C anywhere in
``run_pipeline.py`` or the ``intermimic`` CLI ends with one line on stderr and status 130."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from intermimic_policy import cli
from training.config import ConfigError, load_pipeline_config
from training.run_pipeline import main as pipeline_main

ROOT = Path(__file__).resolve().parents[1]
SMOKE = ROOT / "config" / "pipeline" / "smoke.yaml"
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


@pytest.mark.parametrize("text", ["", "# only a comment\n", "{}\n"])
def test_empty_pipeline_config_is_refused(tmp_path: Path, text: str, capsys) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"^{path}: the file is empty"):
        load_pipeline_config(path)
    assert pipeline_main(["--config", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "the file is empty" in err
    assert not (tmp_path / "out").exists()  # nothing started


def _interrupt(argv: list[str], *, after_s: float | None = None, after_line: str | None = None,
               cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Start ``argv``; send SIGINT after a delay or once stdout shows ``after_line``; return the result."""
    proc = subprocess.Popen(argv, cwd=cwd, env=ENV if env is None else env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out = []
    try:
        if after_line is not None:
            assert proc.stdout is not None
            deadline = time.monotonic() + 120
            for line in proc.stdout:
                out.append(line)
                if after_line in line or time.monotonic() > deadline:
                    break
        else:
            time.sleep(after_s or 0.0)
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    return subprocess.CompletedProcess(argv, proc.returncode, "".join(out) + rest, err)


def test_ctrl_c_during_the_pipeline_imports_is_one_line_and_130(tmp_path: Path) -> None:
    done = _interrupt([sys.executable, str(ROOT / "training" / "run_pipeline.py"), "--config", str(SMOKE),
                       "--out", str(tmp_path / "out")], after_s=1.0)
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "run_pipeline: interrupted", done.stderr


def test_ctrl_c_during_training_is_one_line_and_130(tmp_path: Path) -> None:
    done = _interrupt([sys.executable, str(ROOT / "training" / "run_pipeline.py"), "--config", str(SMOKE),
                       "--out", str(tmp_path / "out"), "--no-progress"], after_line="stage teachers")
    assert "stage teachers" in done.stdout
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip().splitlines()[-1] == "run_pipeline: interrupted"
    assert "Traceback" not in done.stderr, done.stderr
    assert not list((tmp_path / "out").rglob("*.tmp"))  # atomic writers cleaned up


SLOW_COMMANDS = """
import sys, time
print("importing", flush=True)
time.sleep(120)  # an import that takes long (torch, MuJoCo): Ctrl-C lands inside it
"""

CLI_WITH_SLOW_IMPORT = """
from intermimic_policy import cli
cli.exit_process(cli.main(["slow"], ("intermimic_policy.motion.commands", "slow_commands")))
"""


def test_ctrl_c_during_cli_imports_is_one_line_and_130(tmp_path: Path) -> None:
    # deterministic: the signal is sent once the CLI is inside a command module's import (a
    # fixed delay raced the imports: too early on a loaded machine, too late on an idle one)
    (tmp_path / "slow_commands.py").write_text(SLOW_COMMANDS)
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    done = _interrupt([sys.executable, "-c", CLI_WITH_SLOW_IMPORT], after_line="importing", env=env)
    assert "importing" in done.stdout
    assert done.returncode == 130, done.stderr
    assert done.stderr.strip() == "intermimic: interrupted", done.stderr


def test_a_second_ctrl_c_while_stopping_changes_nothing(tmp_path: Path) -> None:
    # the first Ctrl-C unwinds through a slow ``finally``; a second one during it is ignored
    (tmp_path / "slow_commands.py").write_text(
        "import time\ntry:\n    print('importing', flush=True)\n    time.sleep(120)\n"
        "finally:\n    print('cleaning', flush=True)\n    time.sleep(1.0)\n")
    env = {**ENV, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)])}
    proc = subprocess.Popen([sys.executable, "-c", CLI_WITH_SLOW_IMPORT], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "importing"
        proc.send_signal(signal.SIGINT)
        assert proc.stdout.readline().strip() == "cleaning"
        proc.send_signal(signal.SIGINT)  # while the finally block runs
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert err.strip() == "intermimic: interrupted", err


def test_ctrl_c_inside_a_cli_command_is_one_line_and_130(monkeypatch, capsys) -> None:
    def interrupted(*args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert cli.main(["obs-layout"]) == 130
    assert capsys.readouterr().err == "intermimic: interrupted\n"
