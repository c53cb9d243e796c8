"""Actions relative to the reference pose: a fixed prior that the network's output is added to.

Why: upstream's actions are absolute PD targets (``target = offset + scale * a``, scale ~pi for
the body joints), so a network must output the reference pose itself to within a few
hundredths of a radian before any correction counts; cloned by behaviour cloning on a CPU budget
it misses by ~0.04 rad RMS, which puts the hands 2-3 cm off the box: the grip fails (measured on
the example clip). With this prior, ``action = prior(obs) + net(normalised obs)`` where the prior
is exactly PD replay's action for the body joints, so the network learns only the residual
(balance, grip) and an untrained network already replays the reference.

The prior needs no extra input: the observation's reference block at offset +1 carries
``ref_local_body_rot`` (the 22 non-hand bodies' rotations in the reference heading frame, as
x and z axes); a joint rotation is the parent's rotation inverse times the child's (the heading
cancels), mapped to a rotation vector and then to action units. Finger joints (not observed)
get prior 0 (mid-range). The prior is part of the policy graph, so the exported ONNX file still
maps raw observations to absolute actions: the deployment contract does not change.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from intermimic_policy.embodiment import smplx_body as sb
from intermimic_policy.observation.spec import ObservationSpec

PRIORS: tuple[str, ...] = ("none", "reference")
TERM = "ref_local_body_rot"


class PriorError(ValueError):
    pass


def _matrix(tan_norm: Tensor) -> Tensor:
    """[..., 6] (x axis, z axis) -> rotation matrices [..., 3, 3] (columns x, y, z)."""
    x = tan_norm[..., 0:3]
    z = tan_norm[..., 3:6]
    x = x / x.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    z = z - (z * x).sum(-1, keepdim=True) * x
    z = z / z.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    y = torch.cross(z, x, dim=-1)
    return torch.stack([x, y, z], dim=-1)


def _log(r: Tensor) -> Tensor:
    """Rotation matrices [..., 3, 3] -> rotation vectors [..., 3] (angles below ~3.1 rad).

    The angle is atan2(|skew| / 2, (trace - 1) / 2): well conditioned at small angles, where
    acos of the trace loses half the float32 digits."""
    trace = r[..., 0, 0] + r[..., 1, 1] + r[..., 2, 2]
    skew = torch.stack([r[..., 2, 1] - r[..., 1, 2], r[..., 0, 2] - r[..., 2, 0], r[..., 1, 0] - r[..., 0, 1]], -1)
    sin2 = skew.norm(dim=-1)  # 2 sin(angle)
    angle = torch.atan2(0.5 * sin2, 0.5 * (trace - 1.0))
    small = sin2 < 1e-4
    factor = torch.where(small, torch.full_like(angle, 0.5), angle / sin2.clamp_min(1e-4))
    return skew * factor[..., None]


class ReferencePrior(nn.Module):
    """obs [B, D] (raw) -> prior actions [B, 153]: PD replay's body-joint actions, fingers 0."""

    parent_idx: Tensor
    child_idx: Tensor
    cols: Tensor
    offset: Tensor
    scale: Tensor

    def __init__(self, spec: ObservationSpec, action_offset: Tensor, action_scale: Tensor) -> None:
        super().__init__()
        rows = [r for r in spec.layout() if r["term"] == TERM and r["ref_offset"] == 1]
        if not rows:
            raise PriorError(f"action prior 'reference' needs the {TERM!r} term at reference offset +1 "
                             f"(observation offsets {list(spec.ref_offsets)})")
        start = int(rows[0]["start"])  # type: ignore[call-overload]
        bodies = list(spec.no_hand_bodies)
        index = {b: i for i, b in enumerate(bodies)}
        joints, parents, children = [], [], []
        for b in bodies:
            parent = sb.PARENTS[b]
            if b == 0 or parent not in index:
                continue
            joints.append(b - 1)  # joint j moves body j + 1
            parents.append(index[parent])
            children.append(index[b])
        cols = torch.tensor(joints)[:, None] * 3 + torch.arange(3)[None, :]
        self.start = start
        self.num_bodies = len(bodies)
        self.register_buffer("parent_idx", torch.tensor(parents), persistent=False)
        self.register_buffer("child_idx", torch.tensor(children), persistent=False)
        self.register_buffer("cols", cols.reshape(-1), persistent=False)
        self.register_buffer("offset", action_offset.float().reshape(-1)[cols.reshape(-1)].clone(), persistent=False)
        self.register_buffer("scale", action_scale.float().reshape(-1)[cols.reshape(-1)].clone(), persistent=False)
        self.action_dim = int(action_offset.numel())

    def forward(self, obs: Tensor) -> Tensor:
        block = obs[:, self.start:self.start + 6 * self.num_bodies].reshape(obs.shape[0], self.num_bodies, 6)
        rot = _matrix(block)
        rel = torch.matmul(rot[:, self.parent_idx].transpose(-1, -2), rot[:, self.child_idx])
        rotvec = _log(rel).reshape(obs.shape[0], -1)
        body = ((rotvec - self.offset) / self.scale).clamp(-1.0, 1.0)
        out = torch.zeros(obs.shape[0], self.action_dim, dtype=obs.dtype, device=obs.device)
        return out.index_copy(1, self.cols, body.to(obs.dtype))


def build_prior(name: str, spec: ObservationSpec, upstream_action_scale: bool = False) -> ReferencePrior | None:
    """The prior called ``name`` ("none": None) for ``spec`` and the action map in use."""
    if name == "none":
        return None
    if name != "reference":
        raise PriorError(f"unknown action prior {name!r}; choose one of {', '.join(PRIORS)}")
    if spec.num_bodies != sb.NUM_BODIES:
        raise PriorError(f"action prior 'reference' reads the SMPL-X humanoid's joints; this observation has "
                         f"{spec.num_bodies} bodies (a robot): use action_prior 'none'")
    offset, scale = sb.action_offset_scale(upstream_action_scale)
    return ReferencePrior(spec, torch.as_tensor(offset), torch.as_tensor(scale))
