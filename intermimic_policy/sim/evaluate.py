"""Closed-loop evaluation of a policy on HOI clips: success, duration, E_h, E_o (spec 10).

Every clip runs from frame 0 until its last frame or a failure (fall, interaction early
termination, broken physics), ``attempts`` times, with a deterministic setup. Every attempt
counts (mean over attempts), instead of upstream's best-of-many with shared per-step tables.
Clips are grouped by object; each group runs in one batched environment (``max_worlds`` at a time).

Policies are pluggable: :func:`register_policy_loader` (``sim.policy_loaders``) adds a loader
that turns a ``--policy`` argument (a name, a checkpoint path, an ``.onnx`` file) into a
:class:`Policy`. Built in: ``"pd-replay"``, the no-learning baseline whose PD targets are the
reference's next joint rotations; ``training.cli`` registers training checkpoints.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from intermimic_policy.errors import IntermimicError
from intermimic_policy.jsonio import dump_json
from intermimic_policy.motion.hoi_motion import HOIMotion
from intermimic_policy.sim.env import HOIEnv
from intermimic_policy.sim.env_config import SKELETONS, eval_config
from intermimic_policy.sim.perturb import Perturbation
from intermimic_policy.sim.policy_loaders import EvalError as EvalError
from intermimic_policy.sim.policy_loaders import load_policy as load_policy
from intermimic_policy.sim.policy_loaders import policy_loaders as policy_loaders
from intermimic_policy.sim.policy_loaders import register_policy_loader as register_policy_loader
from intermimic_policy.sim.subject import subject_skeleton


@runtime_checkable
class Policy(Protocol):
    """Maps the environment's observation to actions [N, 153] in [-1, 1].

    ``config_overrides`` are ``HOIEnvConfig`` fields the policy needs (its observation spec,
    ``upstream_action_map``, ...), applied on top of the evaluation config.
    """

    name: str
    config_overrides: dict[str, Any]

    def reset(self, env: HOIEnv, seed: int) -> None: ...

    def act(self, env: HOIEnv, obs: Tensor) -> Tensor: ...


@dataclass
class PDReplayPolicy:
    """No learning: PD targets are the reference joint rotations of the next frame."""

    name: str = "pd-replay"
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def reset(self, env: HOIEnv, seed: int) -> None:
        pass

    def act(self, env: HOIEnv, obs: Tensor) -> Tensor:
        return env.pd_replay_actions()


register_policy_loader("pd-replay", lambda arg: PDReplayPolicy() if arg == "pd-replay" else None)


@dataclass
class OnnxPolicy:
    """An exported policy (ONNX + contract) acting through ONNX Runtime, as the policy node runs it.

    The environment is built with the contract's observation spec and rates, so the evaluation
    sees what the deployment sees."""

    name: str
    runtime: Any
    config_overrides: dict[str, Any] = field(default_factory=dict)

    def reset(self, env: HOIEnv, seed: int) -> None:
        pass

    def act(self, env: HOIEnv, obs: Tensor) -> Tensor:
        out = self.runtime(obs.detach().cpu().numpy().astype("float32", copy=False))
        return torch.from_numpy(out).to(env.device, torch.float32).clamp(-1.0, 1.0)


def load_onnx_policy(path: str | os.PathLike[str]) -> OnnxPolicy:
    """Open ``path`` (checked against its golden pairs) and derive the env settings it needs."""
    from intermimic_policy.contract import EMBODIMENT
    from intermimic_policy.embodiment import smplx_body
    from intermimic_policy.embodiment.description import robot_name
    from intermimic_policy.embodiment.skeleton import default_skeleton
    from intermimic_policy.runtime.loader import load_policy as load_runtime

    try:
        runtime = load_runtime(path, backend="onnxruntime", threads=1)
    except IntermimicError as exc:
        raise EvalError(f"policy {path}: {exc}") from exc
    c = runtime.contract
    if c.embodiment != EMBODIMENT:  # a robot: its embodiment names it; no SMPL-X quirks or skeleton
        try:
            robot = robot_name(c.embodiment)
        except IntermimicError as exc:
            raise EvalError(f"policy {path}: {exc}") from exc
        return OnnxPolicy(f"onnx:{os.path.basename(os.fspath(path))}", runtime,
                          {"obs_spec": c.observation, "physics_hz": c.physics_hz, "control_hz": c.control_hz,
                           "robot": robot})
    scale = np.asarray(c.action_scale)
    quirks = bool(np.allclose(scale, smplx_body.action_offset_scale(True)[1])
                  and not np.allclose(scale, smplx_body.action_offset_scale(False)[1]))
    overrides: dict[str, Any] = {"obs_spec": c.observation, "physics_hz": c.physics_hz, "control_hz": c.control_hz,
                                 "upstream_action_map": quirks}
    if c.model_hash != default_skeleton().content_hash():
        overrides["skeleton"] = "subject"  # trained on a humanoid fitted to its clips
    return OnnxPolicy(f"onnx:{os.path.basename(os.fspath(path))}", runtime, overrides)


register_policy_loader("onnx", lambda arg: load_onnx_policy(arg) if arg.lower().endswith(".onnx") else None)


@dataclass(frozen=True)
class EvalSettings:
    attempts: int = 1
    backend: str = "mujoco"
    max_worlds: int = 64  # worlds per batched environment
    threads: int = 0
    device: str = "cpu"
    seed: int = 0
    progress: bool = True
    skeleton: str = "default"  # HOIEnvConfig.skeleton: "default" or "subject" (fitted to the clips)
    perturb: Perturbation = field(default_factory=Perturbation)  # robustness settings (sim.perturb)

    def __post_init__(self) -> None:
        if self.skeleton not in SKELETONS:
            raise EvalError(f"skeleton must be one of {', '.join(SKELETONS)}, got {self.skeleton!r}")
        if self.attempts < 1:
            raise EvalError(f"attempts must be >= 1, got {self.attempts}")
        if self.max_worlds < 1:
            raise EvalError(f"max_worlds must be >= 1, got {self.max_worlds}")


@dataclass
class EvalReport:
    policy: str
    settings: EvalSettings
    # one row per clip: clip, frames, attempts, success_rate, duration, E_h, E_o, and how attempts
    # ended ("endings": reason -> count, e.g. "clip_end", "fall", "hand_contact_lost")
    clips: list[dict[str, Any]]
    model_hashes: dict[str, str]
    obs_spec_digest: str
    skeleton: str = "default"  # the humanoid evaluated: "default" or "subject"

    def summary(self) -> dict[str, Any]:
        """Means over all attempts of all clips (errors in cm, durations in s)."""
        attempts = sum(c["attempts"] for c in self.clips)
        successes = sum(c["successes"] for c in self.clips)

        def mean(key: str) -> float:
            rows = [(c["attempts"], c[key]) for c in self.clips if not math.isnan(c[key])]
            total = sum(n for n, _ in rows)
            return sum(n * v for n, v in rows) / total if total else math.nan

        return {
            "policy": self.policy,
            "clips_evaluated": len(self.clips),
            "attempts": attempts,
            "successes": successes,
            "success_rate": successes / attempts if attempts else math.nan,
            "mean_duration_s": mean("duration_s"),
            "E_h_cm": mean("E_h_cm"),
            "E_o_cm": mean("E_o_cm"),
        }

    def to_dict(self) -> dict[str, Any]:
        s = self.settings
        return {
            **self.summary(),
            "backend": s.backend,
            "skeleton": self.skeleton,
            "attempts_per_clip": s.attempts,
            "perturb": s.perturb.changed(),
            "seed": s.seed,
            "model_hashes": self.model_hashes,
            "obs_spec_digest": self.obs_spec_digest,
            "clips": self.clips,
        }

    def table(self) -> str:
        head = (f"{'clip':<28} {'frames':>6} {'success':>8} {'duration_s':>10} {'E_h_cm':>7} {'E_o_cm':>7}"
                f"  ended by")
        lines = [head, "-" * len(head)]
        for c in self.clips:
            lines.append(f"{c['clip']:<28} {c['frames']:>6d} {_pct(c['success_rate']):>8} "
                         f"{c['duration_s']:>10.2f} {c['E_h_cm']:>7.2f} {c['E_o_cm']:>7.2f}  "
                         + ", ".join(f"{k} x{v}" for k, v in c.get("endings", {}).items()))
        s = self.summary()
        lines.append("-" * len(head))
        lines.append(f"{'all (' + str(s['clips_evaluated']) + ' clips)':<28} {'':>6} {_pct(s['success_rate']):>8} "
                     f"{s['mean_duration_s']:>10.2f} {s['E_h_cm']:>7.2f} {s['E_o_cm']:>7.2f}")
        return "\n".join(lines)

    def write_json(self, path: str | os.PathLike[str]) -> None:
        """Strict JSON: a metric that is NaN (nothing evaluated) is written as null."""
        dump_json(path, self.to_dict())


def _pct(x: float) -> str:
    return "nan" if math.isnan(x) else f"{100.0 * x:.0f}%"


def _row(stats: dict[str, Any], name: str, frames: int) -> dict[str, Any]:
    return {
        "clip": name, "frames": frames, "attempts": stats["attempts"], "successes": stats["successes"],
        "success": stats["successes"] == stats["attempts"], "success_rate": stats["success_rate"],
        "duration_s": stats["mean_duration_s"], "duration_s_std": stats["duration_s_std"],
        "E_h_cm": stats["E_h_cm"], "E_h_cm_std": stats["E_h_cm_std"],
        "E_o_cm": stats["E_o_cm"], "E_o_cm_std": stats["E_o_cm_std"],
    }


def unique_names(motions: Sequence[HOIMotion]) -> list[HOIMotion]:
    """The clips with names made unique ("name", "name#2", ...), so report rows never merge."""
    seen: Counter[str] = Counter()
    out = []
    for i, m in enumerate(motions):
        base = m.name or f"clip{i}"
        seen[base] += 1
        name = base if seen[base] == 1 else f"{base}#{seen[base]}"
        out.append(m if name == m.name else dataclasses.replace(m, name=name))
    return out


def evaluate(motions: Sequence[HOIMotion], policy: Policy, settings: EvalSettings | None = None) -> EvalReport:
    """Run ``policy`` on every clip (``settings.attempts`` times) and report per clip and overall."""
    s = settings or EvalSettings()
    if not motions:
        raise EvalError("no clips to evaluate")
    named = unique_names(motions)
    by_object: dict[str, list[HOIMotion]] = {}
    for m in named:
        by_object.setdefault(m.object_name, []).append(m)
    rows: dict[str, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    digest = ""
    # a policy trained on one skeleton is evaluated on it; --skeleton only chooses for the others
    overrides = dict(policy.config_overrides)
    robots = {str(getattr(m, "robot", "")) for m in named}  # robot motions name their robot
    if robots != {""}:
        if len(robots) != 1 or "" in robots:
            raise EvalError(f"clips of several bodies ({sorted(r or 'smplx' for r in robots)}): evaluate one at a time")
        robot = robots.pop()
        if overrides.setdefault("robot", robot) != robot:
            raise EvalError(f"policy {policy.name} drives robot {overrides['robot']!r}, the clips are {robot!r}'s")
    elif overrides.get("robot"):
        raise EvalError(f"policy {policy.name} drives robot {overrides['robot']!r}; give its retargeted clips")
    which = overrides.pop("skeleton", s.skeleton)
    if s.skeleton != "default" and which != s.skeleton:
        raise EvalError(f"policy {policy.name} was trained with skeleton {which!r}, not {s.skeleton!r}")
    # one subject skeleton from ALL the clips, shared by the per-object environments
    skeleton = subject_skeleton(named) if which == "subject" else None
    total_frames = sum(m.num_frames * s.attempts for m in named)
    bar = tqdm(total=total_frames, desc=f"eval {policy.name}", unit="frame", disable=not s.progress)
    try:
        for obj, clips in by_object.items():
            runs = [(c, a) for c in range(len(clips)) for a in range(s.attempts)]
            worlds = min(len(runs), s.max_worlds)
            config = eval_config(num_worlds=worlds, backend=s.backend, threads=s.threads, device=s.device,
                                 seed=s.seed, skeleton=which, perturb=s.perturb, **overrides)
            env = HOIEnv(config, clips, skeleton=skeleton)
            hashes[obj], digest = env.model_hash, env.obs_spec.digest()
            endings: dict[int, Counter[str]] = {}
            try:
                for start in range(0, len(runs), worlds):
                    batch = runs[start:start + worlds]
                    _run_batch(env, policy, [c for c, _ in batch], s.seed + start, bar, endings)
                summary = env.metrics.summary()
            finally:
                env.close()
            lib = env.motion_library
            for c in summary["clips"]:
                rows[c["clip"]] = _row(c, c["clip"], c["frames"])
            for clip_id, counts in endings.items():
                rows[lib.clip_names[clip_id]]["endings"] = dict(counts.most_common())
            for i, name in enumerate(lib.clip_names):  # a clip that never ran (cannot happen) stays visible
                rows.setdefault(name, _row(_empty(), name, int(lib.num_frames[i])))
    finally:
        bar.close()
    return EvalReport(policy.name, s, [rows[m.name] for m in named], hashes, digest, which)


def _empty() -> dict[str, Any]:
    nan = math.nan
    return {"attempts": 0, "successes": 0, "success_rate": nan, "mean_duration_s": nan, "duration_s_std": nan,
            "E_h_cm": nan, "E_h_cm_std": nan, "E_o_cm": nan, "E_o_cm_std": nan}


def _run_batch(env: HOIEnv, policy: Policy, clips: list[int], seed: int, bar: tqdm,
               endings: dict[int, Counter[str]]) -> None:
    """Run one batch of attempts (worlds 0..len(clips)-1) to their ends.

    Worlds beyond the batch (the last batch may be smaller) are not reset: they have ended
    already (or never started), so they step along unscored.
    """
    used = len(clips)
    clip_ids = torch.tensor(clips, dtype=torch.long)
    obs = env.reset(torch.arange(used), clip_ids=clip_ids, start_frames=torch.zeros(used, dtype=torch.long))
    policy.reset(env, seed)
    last_frames = env.motion_library.num_frames[clip_ids[:used]]
    counted = torch.zeros(used, dtype=torch.long)
    while bool(env.active[:used].any()):
        obs, _, _, _, info = env.step(policy.act(env, obs))
        for w in info["done_ids"].tolist():
            if w < used:
                why = [k for k, v in info["reasons"].items() if bool(v[w])] or ["clip_end"]
                endings.setdefault(int(env.clip[w]), Counter())["+".join(why)] += 1
        done = torch.where(env.active[:used].cpu(), env.t[:used].cpu(), last_frames.cpu())
        bar.update(int((done - counted).clamp_min(0).sum()))
        counted = torch.maximum(counted, done)
