"""The student environment (spec 9.2): one simulation, two observations.

* The simulation, reward, interaction early termination and the initial states (hybrid / PSI)
  follow the *refined* clips: an ``HOIEnv`` built on them with the student observation spec.
* The teacher observation is built from the *MoCap* clip at the same frames, on the same
  simulated state, exactly as the teacher was trained (its own spec, offsets {1, 16}).

Refined clip ``i`` starts at MoCap frame 0 (distillation records from frame 0), so frame ``t`` of
both is the same instant. Each world's teacher is the teacher of its clip's subset.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from intermimic_policy.embodiment.skeleton import Skeleton
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.observation.builder import ObservationBuilder
from intermimic_policy.observation.spec import ObservationSpec
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import HOIEnvConfig
from intermimic_policy.sim.reference import MotionLibrary
from training.student.teachers import TeacherBankError


class StudentEnv:
    def __init__(self, config: HOIEnvConfig, refined: Sequence[HOIMotion], mocap: Sequence[HOIMotion],
                 clip_teacher: Sequence[int], teacher_spec: ObservationSpec, *,
                 skeleton: Skeleton | None = None) -> None:
        if len(refined) != len(mocap) or len(refined) != len(clip_teacher):
            raise TeacherBankError(f"{len(refined)} refined clips, {len(mocap)} MoCap clips and "
                                   f"{len(clip_teacher)} teacher ids must match one to one")
        for r, m in zip(refined, mocap):
            if r.name != m.name or r.object_name != m.object_name:
                raise TeacherBankError(f"refined clip {r.name!r} ({r.object_name}) is not paired with its MoCap "
                                       f"clip (got {m.name!r}, {m.object_name})")
        self.env = HOIEnv(config, refined, skeleton=skeleton)
        lib = self.env.motion_library
        points = {name: lib.points[i] for i, name in enumerate(lib.object_list)}
        self.mocap = MotionLibrary(list(mocap), points, self.env.device, num_points=lib.num_points)
        self.teacher_spec = teacher_spec
        self.teacher_builder = ObservationBuilder(teacher_spec)
        self.clip_teacher = torch.tensor(list(clip_teacher), dtype=torch.long, device=self.env.device)

    @property
    def num_worlds(self) -> int:
        return self.env.num_worlds

    def world_teacher(self) -> Tensor:
        """Teacher index of every world (from its current clip)."""
        return self.clip_teacher[self.env.clip]

    def teacher_obs(self) -> Tensor:
        """The teacher's observation of every world now: simulated state vs the MoCap reference."""
        env = self.env
        refs = self.mocap.frames_at_offsets(env.clip, env.t, self.teacher_spec.ref_offsets)
        obs = self.teacher_builder.build(env.sim_state(), refs, env._world_points)
        return torch.nan_to_num(obs, nan=0.0, posinf=0.0, neginf=0.0)

    def close(self) -> None:
        self.env.close()
