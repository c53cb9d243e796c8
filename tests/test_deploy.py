"""A deployment install (no torch, no MuJoCo, no mesh tools) runs the policy node through a whole
closed loop over DDS, and ``intermimic policy info --verify``.

``tests/deploy_blocker/sitecustomize.py`` on PYTHONPATH makes a Python process in which those
packages raise ``ModuleNotFoundError`` (as if never installed). The policy node runs in such a
process; the motion streamer and the simulation bridge (which simulates, so needs MuJoCo) run in
ordinary ones, all on Cyclone DDS on loopback, lockstep, on a real OMOMO clip. The object table
gives the clip's object as a points file, the way a deployment without mesh tools does.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from intermimic_policy.motion.io import load_motion, save_motion
from intermimic_policy.ros.launcher import NODES, ManagedProcess, start_process, stop_processes
from intermimic_policy.sim.objects import load_object

REPO = Path(__file__).resolve().parents[1]
BLOCKER = REPO / "tests" / "deploy_blocker"
CLIP = "OMOMO_new/sub2_largetable_000.pt"
TICKS = 45


def _deploy_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(BLOCKER), str(REPO)]), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def policy_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from training.export import export_random

    out = tmp_path_factory.mktemp("policy") / "teacher.onnx"
    export_random("teacher", out, seed=3)
    return out


def test_the_blocker_blocks() -> None:
    for module in ("torch", "mujoco", "trimesh"):
        done = subprocess.run([sys.executable, "-c", f"import {module}"], env=_deploy_env(), capture_output=True,
                              text=True, timeout=60)
        assert done.returncode != 0 and "deployment install" in done.stderr, module


def test_policy_info_verify_without_torch(policy_file: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "intermimic_policy.cli", "policy", "info", str(policy_file),
                           "--verify"], env=_deploy_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "golden pairs reproduced by onnxruntime" in done.stdout


def test_policy_node_without_torch_or_mujoco_runs_the_closed_loop(motions_root: Path, policy_file: Path,
                                                                 tmp_path: Path) -> None:
    motion = load_motion(motions_root / CLIP)
    clip = tmp_path / "clip.npz"
    save_motion(motion.slice(0, TICKS + 30), clip)
    points = tmp_path / f"{motion.object_name}.npy"
    np.save(points, load_object(motion.object_name, num_points=1024).points(1024))
    domain = 1 + (os.getpid() % 20) * 4 + 3
    summary = tmp_path / "summary.json"
    doc = yaml.safe_load((REPO / "config" / "sim_hoi.yaml").read_text())
    doc["common"].update(domain_id=domain, transport="cyclone", lockstep=True, clip=str(clip), example=False,
                         policy=str(policy_file), topic_prefix=f"/deploy{os.getpid()}")
    doc["policy_node"].update(objects=[f"{motion.object_name}={points}"], num_object_points=1024,
                              timeouts={"reference_s": 2.0, "object_pose_s": 1.0, "state_s": 1.0, "contacts_s": 1.0})
    doc["sim_bridge"].update(duration_s=TICKS / 30.0, summary=str(summary), exit_when_done=True)
    config = tmp_path / "sim_hoi.yaml"
    config.write_text(yaml.safe_dump(doc))
    procs: list[ManagedProcess] = []
    try:
        for spec in NODES:
            env = _deploy_env() if spec.name == "policy_node" else {**os.environ, "PYTHONUNBUFFERED": "1"}
            procs.append(start_process(spec.name, [sys.executable, "-m", spec.module, "--config", str(config)],
                                       tmp_path / f"{spec.name}.log", env))
        bridge = next(p for p in procs if p.name == "sim_bridge")
        deadline = time.monotonic() + 150
        while bridge.popen.poll() is None and time.monotonic() < deadline:
            for p in procs:
                assert p.popen.poll() is None or p is bridge, f"{p.name} died:\n{p.log_tail(20)}"
            time.sleep(0.2)
        assert bridge.popen.poll() == 0, bridge.log_tail(20)
    finally:
        stop_processes(procs, 5.0)
    node_log = (tmp_path / "policy_node.log").read_text()
    assert "Traceback" not in node_log and "error" not in node_log.lower(), node_log[-2000:]
    result = json.loads(summary.read_text())
    assert result["ticks"] == TICKS and result["missed_ticks"] == 0 and result["rejected_targets"] == 0
    assert np.isfinite(result["E_h_cm"])
    node = next(p for p in procs if p.name == "policy_node")
    assert node.returncode == 0, node.log_tail(20)
