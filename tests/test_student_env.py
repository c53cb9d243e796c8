"""The student environment: simulation and reward on the refined clips, the teacher's observation
from the MoCap at the same frames, and the student's tokens built by the training observation code."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from intermimic_policy.motion.io import load_motion
from intermimic_policy.observation.spec import student_spec, teacher_spec
from intermimic_policy.observation.student_tokens import (
    flatten_tokens,
    split_tokens,
    student_tokens,
    token_layout,
)
from intermimic_policy.sim.env_config import HOIEnvConfig
from training.student.env import StudentEnv
from training.student.teachers import TeacherBankError


@pytest.fixture(scope="module")
def clips(motions_root: Path):
    mocap = load_motion(motions_root / "OMOMO_new" / "sub2_largetable_000.pt").slice(0, 40)
    other = dataclasses.replace(mocap, name="other")
    return mocap, other


def _env(refined, mocap, teachers):  # type: ignore[no-untyped-def]
    cfg = HOIEnvConfig(num_worlds=4, obs_spec=student_spec(), state_init="start", threads=1, episode_cap=None)
    return StudentEnv(cfg, refined, mocap, teachers, teacher_spec())


def test_teacher_observation_is_the_mocap_view_of_the_same_state(clips):
    mocap, other = clips
    senv = _env([mocap, other], [mocap, other], [0, 1])
    try:
        senv.env.reset(clip_ids=torch.tensor([0, 1, 0, 1]), start_frames=torch.tensor([0, 3, 5, 9]))
        senv.env.step(senv.env.pd_replay_actions())
        tokens = split_tokens(senv.env.obs)
        # refined == MoCap here, so the teacher's blocks (offsets 1, 16) are the student's tokens 1 and 3
        torch.testing.assert_close(senv.teacher_obs(), torch.cat([tokens[:, 1], tokens[:, 3]], dim=1))
        assert senv.world_teacher().tolist() == [0, 1, 0, 1]
        # the student's tokens, built by the one observation code path the policy node calls too
        env = senv.env
        refs = env.motion_library.frames_at_offsets(env.clip, env.t, student_spec().ref_offsets)
        built = student_tokens(env.sim_state(), refs, env._world_points)
        torch.testing.assert_close(flatten_tokens(built), env.obs)
    finally:
        senv.close()


def test_teacher_sees_the_mocap_while_the_student_sees_the_refined_clip(clips):
    mocap, _ = clips
    shifted = dataclasses.replace(mocap, object_pos=mocap.object_pos + 0.05, body_pos=mocap.body_pos + 0.02,
                                  root_pos=mocap.root_pos + 0.02)
    senv = _env([shifted], [mocap], [0])
    try:
        senv.env.reset(clip_ids=torch.zeros(4, dtype=torch.long), start_frames=torch.zeros(4, dtype=torch.long))
        tokens = split_tokens(senv.env.obs)
        teacher = senv.teacher_obs()
        block = teacher_spec().block_dim
        sl = teacher_spec().term_slices()["object_pos_error"]
        # the object error the teacher sees is against the MoCap object, 5 cm away from the refined one
        diff = teacher[:, sl] - tokens[:, 1, sl]
        assert diff.abs().max() > 0.01
        assert teacher.shape == (4, 2 * block)
    finally:
        senv.close()


def test_pairs_and_layout_are_checked(clips):
    mocap, other = clips
    with pytest.raises(TeacherBankError, match="not paired"):
        _env([mocap], [other], [0])
    layout = token_layout()
    assert [t["ref_offset"] for t in layout] == [0, 1, 4, 16] and layout[-1]["stop"] == 6396
    with pytest.raises(ValueError, match="6396"):
        split_tokens(torch.zeros(1, 3198))
