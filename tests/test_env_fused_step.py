"""The fused CPU step (sim.fused_step, ``HOIEnvConfig.fused_cpu_step``) equals the torch step.

The torch terms are the definition; the compiled pass must give the same observation, reward,
reward factors, termination reasons, E_h/E_o, hand counters and episode ends, on a real OMOMO
clip, over many steps with resets and terminations, at one and several worlds. Booleans must be
equal; floats equal to float32 rounding.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.motion.io import load_motion
from intermimic_policy.sim import fused_kernels
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import HOIEnvConfig
from intermimic_policy.sim.fused_step import FusedOutcome, _stacked_leaves
from intermimic_policy.sim.metrics import EpisodeMetrics
from intermimic_policy.sim.perturb import Perturbation
from intermimic_policy.sim.psi import PSIConfig

CLIP = "OMOMO_new/sub2_largetable_000.pt"
RTOL, ATOL = 1e-5, 2e-5  # float32 rounding of the same arithmetic in another order


@pytest.fixture(scope="module")
def clips() -> list[HOIMotion]:
    root = os.environ.get("INTERMIMIC_DATA")
    if not root or not (Path(root) / "motions" / CLIP).is_file():
        pytest.fail(f"INTERMIMIC_DATA must point at the shared data with motions/{CLIP}")
    clip = load_motion(Path(root) / "motions" / CLIP).slice(0, 90)
    # a second object: worlds split into two backends, each with its own object cloud
    return [clip, dataclasses.replace(clip.slice(10, 80), object_name="box", name="box_clip")]


def _config(worlds: int, **changes: Any) -> HOIEnvConfig:
    # short episodes and random starts: time-outs, failures and auto-resets within the test
    base: dict[str, Any] = {"num_worlds": worlds, "threads": 1, "state_init": "random", "min_episode_frames": 5,
                            "episode_cap": 15, "seed": 5}
    return HOIEnvConfig(**(base | changes))


def _torch_outcome(env: HOIEnv, t: torch.Tensor, steps: torch.Tensor) -> dict[str, Any]:
    """What the torch path's ``_step`` derives from the same state (before any bookkeeping)."""
    part = env._torch_part(t, steps)
    live = env.active.clone()
    failed = part.reasons["physics_failure"] | part.reasons["nonfinite_obs"]
    reward = torch.where(live & ~failed, torch.nan_to_num(part.reward, nan=0.0), torch.zeros_like(part.reward))
    done = (part.reset | failed) & live
    terminated = (part.terminated | failed) & live
    return {"part": part, "reward": reward, "done": done, "terminated": terminated, "truncated": done & ~terminated}


def _msg(what: str) -> Callable[[str], str]:
    return lambda detail: f"{what}: {detail}"


def _compare(fused: FusedOutcome, want: dict[str, Any], step: int) -> None:
    part = want["part"]
    torch.testing.assert_close(fused.obs, part.obs, rtol=RTOL, atol=ATOL, msg=_msg(f"step {step} observation"))
    torch.testing.assert_close(fused.reward, want["reward"], rtol=RTOL, atol=ATOL, msg=_msg(f"step {step} reward"))
    assert fused.terms.keys() == part.terms.keys()
    for name, value in part.terms.items():
        torch.testing.assert_close(fused.terms[name], value, rtol=RTOL, atol=ATOL, msg=_msg(f"step {step} {name}"))
    assert list(fused.reasons) == list(part.reasons)
    for name, value in part.reasons.items():
        assert torch.equal(fused.reasons[name], value), (step, name)
    for name in ("done", "terminated", "truncated"):
        assert torch.equal(getattr(fused, name), want[name]), (step, name)
    assert torch.equal(fused.hand_lost, part.hand_lost), step
    torch.testing.assert_close(fused.e_h, part.e_h, rtol=RTOL, atol=1e-7)
    torch.testing.assert_close(fused.e_o, part.e_o, rtol=RTOL, atol=1e-7)
    for f in dataclasses.fields(part.prev):
        torch.testing.assert_close(getattr(fused.prev, f.name), getattr(part.prev, f.name), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("worlds", [1, 4])
def test_fused_step_equals_the_torch_step_on_the_same_state(clips: list[HOIMotion], worlds: int) -> None:
    env = HOIEnv(_config(worlds), clips[:1] if worlds == 1 else clips)
    assert env.fused_step_active and env.fused_step_fallback is None
    assert env._fused is not None
    fused_step = env._fused.step
    seen: dict[str, int] = {}

    def both(hand_lost, prev, metrics):  # type: ignore[no-untyped-def]
        # first: the fused call advances t and steps and adds to the metrics' sums
        want = _torch_outcome(env, env.t + 1, env.steps + 1)
        out = fused_step(hand_lost, prev, metrics)
        step = seen.setdefault("steps", 0)
        _compare(out, want, step)
        seen["steps"] = step + 1
        for name, value in out.reasons.items():
            seen[name] = seen.get(name, 0) + int(value.sum())
        return out

    env._fused.step = both  # type: ignore[method-assign]
    env.reset()
    noise = torch.Generator().manual_seed(2)
    for _ in range(40):
        actions = env.pd_replay_actions() + 0.3 * torch.randn(worlds, env.num_actions, generator=noise)
        env.step(actions)
    assert seen["steps"] == 40
    # not vacuous: time-outs and failures happened (each followed by an auto-reset)
    assert seen["episode_cap"] + seen["clip_end"] > 0
    assert seen["hand_contact_lost"] + seen["human_deviation"] + seen["fall"] + seen["ig_deviation"] > 0


def test_fused_action_map_equals_the_torch_one(clips: list[HOIMotion]) -> None:
    env = HOIEnv(_config(3), clips[:1])
    assert env._fused is not None
    noise = torch.Generator().manual_seed(4)
    for scale in (0.1, 1.0, 3.0):  # inside and beyond the action clip
        actions = scale * torch.randn(3, env.num_actions, generator=noise)
        fused = env._fused.targets(actions)
        assert fused.dtype == torch.float64
        torch.testing.assert_close(fused, env.action_to_targets(actions).double(), rtol=0, atol=2e-6)
    env.reset()
    replay = env.pd_replay_actions()
    env._fused, fused_step = None, env._fused
    assert torch.equal(replay, env.pd_replay_actions())  # the same float32 operations
    env._fused = fused_step


def test_fused_env_runs_the_torch_env_trajectory(clips: list[HOIMotion]) -> None:
    """Both paths driven through the same action map (the torch one: the compiled map agrees to
    float32 rounding, which the physics would amplify): equal episodes end to end."""
    def run(fused: bool) -> tuple[HOIEnv, list[Any]]:
        env = HOIEnv(_config(3, fused_cpu_step=fused), clips)
        assert env.fused_step_active == fused
        if env._fused is not None:
            torch_map = env._action_to_targets
            env._fused.target_array = lambda a: (  # type: ignore[method-assign]
                torch_map(torch.as_tensor(a)).to(torch.float64).numpy())
        out: list[Any] = [env.reset()]
        noise = torch.Generator().manual_seed(3)
        for i in range(30):
            if i == 10:  # a caller may start fresh metrics (training.vec_env does at full resets)
                lib = env.motion_library
                env.metrics = EpisodeMetrics(lib.num_frames, 3, lib.fps, lib.clip_names)
                env.metrics.begin(torch.arange(3), env.clip, env.t)
            actions = env.pd_replay_actions() + 0.3 * torch.randn(3, env.num_actions, generator=noise)
            out.append(env.step(actions))
        return env, out

    (fast, a), (slow, b) = run(True), run(False)
    torch.testing.assert_close(a[0], b[0], rtol=0, atol=0)  # resets build the observation the same way
    ends = 0
    for (obs, reward, terminated, truncated, info), (obs2, reward2, terminated2, truncated2, info2) in zip(a[1:], b[1:]):
        torch.testing.assert_close(obs, obs2, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(reward, reward2, rtol=RTOL, atol=ATOL)
        assert torch.equal(terminated, terminated2) and torch.equal(truncated, truncated2)
        assert torch.equal(info["done_ids"], info2["done_ids"]) and torch.equal(info["clip"], info2["clip"])
        assert all(torch.equal(info["reasons"][k], info2["reasons"][k]) for k in info2["reasons"])
        if "terminal_obs" in info2:
            torch.testing.assert_close(info["terminal_obs"], info2["terminal_obs"], rtol=RTOL, atol=ATOL)
        ends += int(info2["done_ids"].numel())
    assert ends > 0
    assert torch.equal(fast.t, slow.t) and torch.equal(fast.active, slow.active)
    fs, ss = fast.metrics.summary(), slow.metrics.summary()
    assert fs["attempts"] == ss["attempts"] > 0 and fs["successes"] == ss["successes"]
    assert fs["E_h_cm"] == pytest.approx(ss["E_h_cm"], rel=1e-5)
    assert fs["E_o_cm"] == pytest.approx(ss["E_o_cm"], rel=1e-5)


@pytest.mark.parametrize("fused", [True, False])
def test_nonfinite_reference_observation_resets_the_world(clips: list[HOIMotion], fused: bool) -> None:
    env = HOIEnv(_config(2, state_init="start", episode_cap=None, fused_cpu_step=fused), clips[:1])
    assert env.fused_step_active == fused
    env.reset(start_frames=torch.tensor([30, 50]))
    lib = env.motion_library
    lib.frame_table[31 + env.obs_spec.ref_offsets[-1]] = float("nan")  # world 0's last observed frame at t = 31
    obs, reward, terminated, truncated, info = env.step(env.pd_replay_actions())
    assert info["reasons"]["nonfinite_obs"].tolist() == [True, False]
    assert terminated.tolist() == [True, False] and not bool(truncated.any())
    assert float(reward[0]) == 0.0 and env.nonfinite_resets == 1
    assert torch.isfinite(obs).all() and not torch.isfinite(info["terminal_obs"]).all()
    assert env.t.tolist() == [0, 51]


@pytest.mark.parametrize(("changes", "why"), [
    ({"fused_cpu_step": False}, "fused_cpu_step is off"),
    ({"pipeline": True}, "pipelined"),
    ({"psi": PSIConfig(slots=2)}, "PSI"),
])
def test_configurations_the_fused_step_does_not_cover_run_torch(clips: list[HOIMotion], changes: dict[str, Any],
                                                                why: str) -> None:
    env = HOIEnv(_config(2, **changes), clips[:1])
    assert not env.fused_step_active and env.fused_step_fallback is not None and why in env.fused_step_fallback
    env.reset()
    env.step(env.pd_replay_actions())


def test_perturbations_act_outside_the_fused_part(clips: list[HOIMotion]) -> None:
    pert = Perturbation(action_delay=1, obs_noise=0.01, push=0.3, push_interval_s=0.1)
    env = HOIEnv(_config(2, perturb=pert), clips[:1])
    assert env.fused_step_active
    env.reset()
    for _ in range(6):
        obs, *_ = env.step(env.pd_replay_actions())
    assert torch.isfinite(obs).all()


def test_leaf_pruned_nearest_point_is_exact() -> None:
    g = np.random.default_rng(0)
    cloud = g.normal(size=(1000, 3)) * np.array([0.5, 0.3, 0.1])  # not a power of two: uneven leaves
    pts, order, starts, lo, hi = _stacked_leaves(np.stack([cloud, cloud[::-1]]))
    assert sorted(order[0].tolist()) == list(range(1000))
    bound = np.empty(lo.shape[1])
    for q in np.concatenate([g.normal(size=(200, 3)) * 1.5, cloud[:50] + 1e-9, cloud[50:60]]):
        want = int(np.argmin(((cloud - q) ** 2).sum(-1)))
        assert fused_kernels._nearest_point(q[0], q[1], q[2], pts[0], order[0], starts[0], lo[0], hi[0], bound) == want


def test_fused_results_stay_as_returned_and_read_by_name(clips: list[HOIMotion]) -> None:
    """Every step hands out fresh arrays (a caller keeping one step's results sees them unchanged
    after later steps), and the reward factors and reasons read by name like the torch path's dicts."""
    env = HOIEnv(_config(3), clips)
    env.reset()
    obs, reward, terminated, _, info = env.step(env.pd_replay_actions())
    kept = (obs.clone(), reward.clone(), terminated.clone(), {k: v.clone() for k, v in info["reward_terms"].items()},
            {k: v.clone() for k, v in info["reasons"].items()}, info["E_h"].clone())
    assert list(info["reward_terms"]) == list(fused_kernels.TERM_NAMES) and len(info["reasons"]) == 10
    assert "clip_end" in info["reasons"] and "no_such_reason" not in info["reasons"]
    with pytest.raises(KeyError):
        info["reasons"]["no_such_reason"]
    noise = torch.Generator().manual_seed(0)
    for _ in range(20):  # episodes end (cap 15), worlds reset, previous velocities are replaced
        env.step(env.pd_replay_actions() + 0.5 * torch.randn(3, env.num_actions, generator=noise))
    assert torch.equal(obs, kept[0]) and torch.equal(reward, kept[1]) and torch.equal(terminated, kept[2])
    assert all(torch.equal(info["reward_terms"][k], v) for k, v in kept[3].items())
    assert all(torch.equal(info["reasons"][k], v) for k, v in kept[4].items())
    assert torch.equal(info["E_h"], kept[5])


def test_fused_physics_refuses_bad_targets(clips: list[HOIMotion]) -> None:
    """The array path into MuJoCo checks what the tensor path checks: the shape and finiteness."""
    from intermimic_policy.sim.backends.base import BackendError

    env = HOIEnv(_config(2), clips)
    env.reset()
    backend = env.groups[0].backend
    rows = np.zeros((backend.num_worlds, 153))
    with pytest.raises(BackendError, match="shape"):
        backend.step_array(rows[:, :152])
    rows[0, 7] = np.nan
    with pytest.raises(BackendError, match="NaN"):
        backend.step_array(rows)
