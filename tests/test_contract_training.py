"""The contract from training to deployment: a teacher trained on a subject skeleton with a
non-default object point count exports a contract that carries both, and a runtime rebuilds the
same kinematics from it; runtimes check it against their own configuration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from intermimic_policy.contract import (
    ContractMismatch,
    DeploymentExpectation,
    check_deployment,
    default_model_hash,
)
from intermimic_policy.embodiment.fk import forward_kinematics
from intermimic_policy.embodiment.mjcf import humanoid_model
from intermimic_policy.embodiment.skeleton import default_skeleton
from intermimic_policy.motion.io import load_motion
from intermimic_policy.runtime.base import read_policy_file
from intermimic_policy.runtime.loader import load_policy
from training.checkpoint import load_checkpoint
from training.config import BCWarmStartConfig, EnvSettings, EvalSettings, PPOConfig, TeacherTrainConfig
from training.export import export_checkpoint
from training.teacher import train_teacher

CLIP = "OMOMO_new/sub2_largetable_000.pt"
POINTS = 96  # not the default 1024


@pytest.fixture(scope="module")
def trained(motions_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two PPO iterations on a subject skeleton with POINTS surface points, exported."""
    clip = load_motion(motions_root / CLIP).slice(0, 40)
    cfg = TeacherTrainConfig(
        iterations=2, save_interval=2, seed=0, keep_checkpoints=1, torch_threads=1,
        ppo=PPOConfig(num_steps_per_env=4, num_learning_epochs=1, minibatch_size=8, hidden_dims=(32, 32)),
        env=EnvSettings(num_envs=2, overrides={"episode_cap": 20, "skeleton": "subject",
                                               "num_object_points": POINTS}),
        eval=EvalSettings(enabled=False), bc_warmstart=BCWarmStartConfig(iterations=0),
    )
    out = tmp_path_factory.mktemp("subject_teacher")
    result = train_teacher("subject", [clip], cfg, out, progress=False)
    onnx_path = out / "teacher.onnx"
    export_checkpoint(result.checkpoint, onnx_path)
    return Path(result.checkpoint), onnx_path


def test_checkpoint_and_onnx_carry_the_subject_skeleton_and_point_count(trained: tuple[Path, Path]) -> None:
    ckpt_path, onnx_path = trained
    ckpt = load_checkpoint(ckpt_path)
    assert ckpt.contract is not None
    assert ckpt.contract.object_points == POINTS
    assert ckpt.contract.model_hash == ckpt.model_hash != default_model_hash()
    exported = read_policy_file(onnx_path).contract
    # export copies the checkpoint's contract, adding only the normaliser and the config digest
    assert exported.object_points == POINTS and exported.model_hash == ckpt.model_hash
    assert exported.skeleton == ckpt.contract.skeleton
    assert (exported.control_hz, exported.physics_hz) == (ckpt.contract.control_hz, ckpt.contract.physics_hz)
    assert exported.normalization is not None and exported.config_digest


def test_runtime_rebuilds_the_trained_kinematics_from_the_contract(trained: tuple[Path, Path]) -> None:
    ckpt_path, onnx_path = trained
    env_skeleton_offsets = np.asarray(load_checkpoint(ckpt_path).contract.skeleton["offsets"])  # type: ignore[index, union-attr]
    skeleton = read_policy_file(onnx_path).contract.skeleton_model()
    assert skeleton.content_hash() == read_policy_file(onnx_path).contract.model_hash
    assert np.array_equal(skeleton.offsets, env_skeleton_offsets)
    # the same FK and the same MuJoCo model as the humanoid trained on; not the default one
    g = torch.Generator().manual_seed(0)
    rotvec = torch.randn(5, 51, 3, generator=g) * 0.3
    root_pos, root_rot = torch.zeros(5, 3), torch.tensor([[0.0, 0.0, 0.0, 1.0]]).repeat(5, 1)
    pos, _ = forward_kinematics(skeleton.offsets, root_pos, root_rot, rotvec)
    want, _ = forward_kinematics(env_skeleton_offsets, root_pos, root_rot, rotvec)
    torch.testing.assert_close(pos, want)
    default_pos, _ = forward_kinematics(default_skeleton().offsets, root_pos, root_rot, rotvec)
    assert (pos - default_pos).abs().max() > 1e-3
    assert humanoid_model(skeleton).nbody == humanoid_model(None).nbody


def test_deployment_checks_against_the_runtime_configuration(trained: tuple[Path, Path]) -> None:
    _, onnx_path = trained
    # a node configured for the contract's skeleton and point count (or accepting them) loads it
    policy = load_policy(onnx_path, backend="onnxruntime", expected=DeploymentExpectation(object_points=POINTS))
    assert policy(np.zeros((1, policy.contract.input_dim), np.float32)).shape == (1, 153)
    # pinned to the default humanoid, or to the default point count: refused, naming the field
    with pytest.raises(ContractMismatch, match="model_hash"):
        load_policy(onnx_path, expected=DeploymentExpectation(model_hash=default_model_hash()))
    with pytest.raises(ContractMismatch, match=f"object_points: policy has {POINTS}, expected 1024"):
        load_policy(onnx_path, expected=DeploymentExpectation(object_points=1024))
    # a bridge stepping physics at another rate refuses the policy
    with pytest.raises(ContractMismatch, match="physics_hz: policy has 240, expected 120"):
        load_policy(onnx_path, expected=DeploymentExpectation(physics_hz=120.0))
    assert check_deployment(read_policy_file(onnx_path).contract, DeploymentExpectation()) == []


def test_policy_node_runs_the_subject_policy_with_its_kinematics(trained: tuple[Path, Path]) -> None:
    """The node's core rebuilds the trained skeleton and point count from the contract."""
    from intermimic_policy.ros.node_config import PolicyNodeConfig
    from intermimic_policy.ros.policy_core import PolicyController, load_checked_policy

    _, onnx_path = trained
    contract = read_policy_file(onnx_path).contract
    config = PolicyNodeConfig(policy=str(onnx_path)).validate()
    controller = PolicyController(config, load_checked_policy(config))
    assert controller.num_points == POINTS
    np.testing.assert_allclose(controller.kinematics.offsets, contract.skeleton_model().offsets, atol=1e-9)
    assert not np.allclose(contract.skeleton_model().offsets, default_skeleton().offsets, atol=1e-4)
