"""The expert's gravity feed-forward: upper-body PD targets offset by tau_gravity / kp."""

from __future__ import annotations

import mujoco
import numpy as np
import torch

from intermimic_policy.embodiment import smplx_body as sb
from intermimic_policy.embodiment.joint_map import hinge_angles_from_rotvec, qpos_from_pose
from intermimic_policy.embodiment.mjcf import humanoid_model
from intermimic_policy.motion.example import make_example_motion
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import eval_config
from training.expert import BalanceGains, body_masses, expert_actions
from training.gravity_compensation import LEG_JOINTS, compensated_dofs, gravity_target_offsets


def _arms_out_pose() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    rv = torch.zeros(1, sb.NUM_JOINTS, 3, dtype=torch.float64)
    return torch.tensor([[0.0, 0.0, 1.0]], dtype=torch.float64), torch.tensor([[0.0, 0.0, 0.0, 1.0]],
                                                                               dtype=torch.float64), rv


def test_offsets_are_the_pd_sag_of_the_upper_body_and_zero_on_the_legs() -> None:
    root_pos, root_rot, rv = _arms_out_pose()  # rest pose: arms straight out to the sides (T-pose)
    offsets = gravity_target_offsets(None, root_pos, root_rot, rv)
    assert offsets.shape == (1, sb.NUM_JOINTS, 3)
    legs = [sb.JOINT_NAMES.index(n) for n in LEG_JOINTS]
    assert torch.all(offsets[0, legs] == 0.0)
    assert int(compensated_dofs().sum()) == 3 * (sb.NUM_JOINTS - len(LEG_JOINTS))
    # in the PD equilibrium kp * (target - q) must equal the gravity force MuJoCo computes
    model = humanoid_model()
    data = mujoco.MjData(model)
    data.qpos[:] = qpos_from_pose(root_pos[0], root_rot[0], rv[0]).numpy()
    mujoco.mj_kinematics(model, data)
    mujoco.mj_comPos(model, data)
    gravity = np.zeros(model.nv)
    mujoco.mj_rne(model, data, 0, gravity)
    shift = (hinge_angles_from_rotvec((rv + offsets.double())[0]) - hinge_angles_from_rotvec(rv[0])).numpy()
    kp = np.repeat([sb.joint_gains(n).kp for n in sb.JOINT_NAMES], 3)
    mask = compensated_dofs()
    np.testing.assert_allclose(kp[mask] * shift[mask], gravity[6:][mask], atol=1e-3)
    shoulder = sb.JOINT_NAMES.index("L_Shoulder")
    assert float(offsets[0, shoulder].norm()) > 0.01  # an outstretched arm weighs on its shoulder


def _wrist_error_cm(feedforward: bool, frames: int) -> float:
    """Mean wrist position error of the expert over the first ``frames`` (stand and reach)."""
    env = HOIEnv(eval_config(num_worlds=1, threads=1), [make_example_motion()])
    try:
        env.reset(torch.arange(1), clip_ids=torch.zeros(1, dtype=torch.long), start_frames=torch.zeros(1, dtype=torch.long))
        gains, mass = BalanceGains().vector(), body_masses(env)
        wrists = [sb.body_index("L_Wrist"), sb.body_index("R_Wrist")]
        errors = []
        for _ in range(frames):
            env.step(expert_actions(env, gains, mass, feedforward))
            sim, ref = env.sim_state(), env.reference(0)
            errors.append(float((sim.body_pos[0, wrists] - ref.body_pos[0, wrists]).norm(dim=-1).mean()))
        return 100.0 * float(np.mean(errors))
    finally:
        env.close()


def test_feedforward_keeps_the_hands_on_the_reference_where_pd_alone_sags() -> None:
    sag, held = _wrist_error_cm(False, 45), _wrist_error_cm(True, 45)
    assert held < 0.6 * sag, (held, sag)
