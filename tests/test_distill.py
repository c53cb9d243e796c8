"""Reference distillation: a policy's rollouts from frame 0 become refined clips that our loaders
read back (npz and InterMimic OMOMO_retarget .pt) with the right frame count and the MoCap's
contact labels; an early termination keeps the valid prefix or drops the clip, as configured."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from intermimic_policy.motion.io import load_motion
from intermimic_policy.sim.evaluate import PDReplayPolicy
from intermimic_policy.sim.terminations import TerminationConfig
from training.distill import counts, distill_teacher, table_markdown
from training.student.config import DistillConfig, StudentConfigError

FRAMES = 40


@dataclass
class Collapse:
    """Drives every joint to its limit: the humanoid falls within a few steps."""

    name: str = "collapse"
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def act(self, env, obs):  # type: ignore[no-untyped-def]
        return -torch.ones(env.num_worlds, env.num_actions)


@pytest.fixture(scope="module")
def clip(motions_root: Path):
    return load_motion(motions_root / "OMOMO_new" / "sub2_largetable_000.pt").slice(0, FRAMES)


def test_distilled_clip_round_trips_with_labels(clip, tmp_path: Path):
    # PD replay without interaction early termination tracks the 40 frames to the end
    policy = PDReplayPolicy(config_overrides={"skeleton": "subject",
                                              "termination": TerminationConfig(early_termination=False)})
    rows = distill_teacher("sub2", policy, [clip], ["src.pt"], tmp_path, DistillConfig(), progress=False)
    (row,) = rows
    assert row["status"] == "complete" and row["frames"] == row["mocap_frames"] == FRAMES
    npz, pt = load_motion(row["npz"]), load_motion(row["pt"])
    assert Path(row["pt"]).parent.name == "OMOMO_retarget"
    assert torch.load(row["pt"], weights_only=True).shape[0] == FRAMES + 1  # upstream's empty row 0
    for m in (npz, pt):
        assert m.num_frames == FRAMES and m.name == clip.name and m.object_name == clip.object_name
        np.testing.assert_array_equal(m.body_contact, clip.body_contact)
        np.testing.assert_array_equal(m.object_contact, clip.object_contact)
        np.testing.assert_allclose(m.root_pos, m.body_pos[:, 0])
    np.testing.assert_allclose(npz.body_pos, pt.body_pos, atol=1e-6)
    assert npz.meta["distilled_by"] == "sub2" and npz.meta["distill_status"] == "complete"
    # the refined clip is the simulation, not a copy of the MoCap: close to it, but not equal
    err = np.linalg.norm(npz.body_pos - clip.body_pos, axis=-1).mean()
    assert 1e-4 < err < 0.2
    m = row["metrics"]
    assert 0 < m["E_h_cm"] < 20 and m["E_o_cm"] >= 0 and m["foot_height_cm_mocap"] == m["foot_height_cm_mocap"]
    assert Path(row["plot"]).stat().st_size > 1000
    assert clip.name in table_markdown(rows)


def test_early_termination_keeps_the_prefix_or_drops_the_clip(clip, tmp_path: Path):
    (kept,) = distill_teacher("t", Collapse(), [clip], ["s"], tmp_path / "keep",
                              DistillConfig(min_frames=2, plots=False), progress=False)
    assert kept["status"] == "prefix" and 2 <= kept["frames"] < FRAMES
    m = load_motion(kept["npz"])
    assert m.num_frames == kept["frames"] and m.meta["distill_status"] == "prefix"
    np.testing.assert_array_equal(m.body_contact, clip.body_contact[: m.num_frames])
    (dropped,) = distill_teacher("t", Collapse(), [clip], ["s"], tmp_path / "drop",
                                 DistillConfig(early_termination="drop"), progress=False)
    assert dropped["status"] == "dropped" and dropped["npz"] is None and not list((tmp_path / "drop").glob("*.npz"))
    assert counts([kept, dropped]) == {"complete": 0, "prefix": 1, "dropped": 1}
    with pytest.raises(StudentConfigError, match="early_termination"):
        DistillConfig(early_termination="pad")
