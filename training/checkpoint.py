"""Training checkpoints: safe to load, atomic to write, tied to the observation layout.

* Only tensors and plain containers (dict, list, tuple, str, int, float, bool, None) are saved,
  so ``torch.load(weights_only=True)`` reads them: a checkpoint from the internet cannot run code.
* Writes go to a temporary file in the destination folder, then ``os.replace``: an interrupted
  save never leaves a half-written checkpoint under the real name.
* The policy's deployment contract (``PolicyContract``: rates, action map, observation spec, object
  point count, skeleton table) is stored with the weights, so export reads it instead of guessing
  it from flags or defaults.
* The observation spec, policy kind and model hash are stored with the weights; loading with an
  ``expected_spec`` of another layout fails with every difference named, instead of a shape error
  deep inside ``load_state_dict`` (or worse, silently wrong inputs of the same size).
* ``capture_rng_state``/``restore_rng_state`` cover python, numpy and torch (CPU and CUDA), so a
  resumed run continues the same random stream.
"""

from __future__ import annotations

import os
import pickle
import random
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import torch

from intermimic_policy.atomic import atomic_output
from intermimic_policy.contract import ContractError, PolicyContract
from intermimic_policy.errors import IntermimicError
from intermimic_policy.observation.spec import ObservationSpec, ObservationSpecError

CHECKPOINT_FORMAT = "intermimic-checkpoint"
CHECKPOINT_VERSION = 1
KINDS = ("teacher", "student")
_PLAIN = (str, int, float, bool, type(None))


class CheckpointError(IntermimicError):
    """A checkpoint that cannot be read or does not belong to this run (names the file)."""


@dataclass
class Checkpoint:
    """A loaded checkpoint; ``obs_spec`` is rebuilt as an ``ObservationSpec``."""

    path: Path
    kind: str
    model_state: dict[str, Any]
    normalizer_state: dict[str, Any]
    optimizer_state: dict[str, Any] | None
    iteration: int
    rng_state: dict[str, Any] | None
    config: dict[str, Any]
    obs_spec: ObservationSpec
    model_hash: str
    extra: dict[str, Any] = field(default_factory=dict)
    version: int = CHECKPOINT_VERSION
    contract: PolicyContract | None = None  # None: saved without one (export refuses it)


def _check_plain(value: Any, where: str) -> None:
    """Refuse anything ``weights_only`` loading would reject, at save time, naming the key."""
    if isinstance(value, torch.Tensor) or isinstance(value, _PLAIN):
        return
    if isinstance(value, Mapping):
        for k, v in value.items():
            if not isinstance(k, _PLAIN):
                raise CheckpointError(f"checkpoint key {where}[{k!r}] is a {type(k).__name__}; "
                                      "keys must be str/int/float/bool")
            _check_plain(v, f"{where}[{k!r}]")
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            _check_plain(v, f"{where}[{i}]")
        return
    raise CheckpointError(f"checkpoint value {where} is a {type(value).__name__}; only tensors and "
                          "plain containers can be saved (convert numpy arrays with torch.from_numpy)")


def _plain_dict(value: Any) -> Any:
    """OrderedDict etc. -> dict, recursively, so the file holds only builtin containers."""
    if isinstance(value, Mapping):
        return {k: _plain_dict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_dict(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_plain_dict(v) for v in value)
    return value


def save_checkpoint(
    path: str | os.PathLike[str],
    *,
    model_state: Mapping[str, Any],
    normalizer_state: Mapping[str, Any],
    optimizer_state: Mapping[str, Any] | None,
    iteration: int,
    rng_state: Mapping[str, Any] | None,
    config: Mapping[str, Any],
    obs_spec: ObservationSpec,
    kind: str,
    model_hash: str,
    extra: Mapping[str, Any] | None = None,
    contract: PolicyContract | None = None,
) -> Path:
    """Write a checkpoint atomically; returns the path. ``extra["network"]`` (``net.arch()``) lets
    ``training.export`` rebuild the network; otherwise it uses the kind's default architecture.
    ``contract`` (``HOIEnv.policy_contract``) must agree with ``kind``, ``obs_spec`` and ``model_hash``."""
    if kind not in KINDS:
        raise CheckpointError(f"checkpoint kind {kind!r} is not one of {KINDS}")
    if contract is not None:
        wrong = [name for name, a, b in (("kind", contract.kind, kind), ("model_hash", contract.model_hash, model_hash),
                                         ("observation", contract.observation, obs_spec)) if a != b]
        if wrong:
            raise CheckpointError(f"checkpoint contract disagrees with the checkpoint's own {', '.join(wrong)}")
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "kind": kind,
        "iteration": int(iteration),
        "model_hash": str(model_hash),
        "obs_spec": obs_spec.to_dict(),
        "model_state": _plain_dict(dict(model_state)),
        "normalizer_state": _plain_dict(dict(normalizer_state)),
        "optimizer_state": None if optimizer_state is None else _plain_dict(dict(optimizer_state)),
        "rng_state": None if rng_state is None else _plain_dict(dict(rng_state)),
        "config": _plain_dict(dict(config)),
        "extra": _plain_dict(dict(extra or {})),
        "contract": None if contract is None else _plain_dict(contract.to_dict()),
    }
    _check_plain(payload, "checkpoint")
    target = Path(path)
    with atomic_output(target) as handle:
        torch.save(payload, handle)
    return target


def load_checkpoint(
    path: str | os.PathLike[str],
    *,
    expected_spec: ObservationSpec | None = None,
    expected_kind: str | None = None,
    map_location: str | torch.device = "cpu",
) -> Checkpoint:
    """Read a checkpoint with ``weights_only=True``; refuses other layouts, kinds and corrupt files."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint file not found")
    try:
        data = torch.load(p, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, pickle.UnpicklingError, ValueError,
            KeyError, AttributeError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(f"{p}: not a readable checkpoint (corrupt, truncated or not saved "
                              f"with weights only): {first}") from exc
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{p}: not an intermimic checkpoint (no '{CHECKPOINT_FORMAT}' header)")
    version = data.get("version")
    if not isinstance(version, int) or version > CHECKPOINT_VERSION:
        raise CheckpointError(f"{p}: checkpoint format version {version!r} is not supported "
                              f"(this intermimic reads <= {CHECKPOINT_VERSION})")
    try:
        spec = ObservationSpec.from_dict(data["obs_spec"])
        contract = data.get("contract")
        ckpt = Checkpoint(
            path=p,
            kind=str(data["kind"]),
            model_state=dict(data["model_state"]),
            normalizer_state=dict(data["normalizer_state"]),
            optimizer_state=data["optimizer_state"],
            iteration=int(data["iteration"]),
            rng_state=data["rng_state"],
            config=dict(data["config"]),
            obs_spec=spec,
            model_hash=str(data["model_hash"]),
            extra=dict(data.get("extra") or {}),
            version=version,
            contract=None if contract is None else PolicyContract.from_dict(contract, source=f"{p} contract"),
        )
    except ContractError as exc:
        raise CheckpointError(str(exc)) from exc
    except (KeyError, TypeError, ValueError, ObservationSpecError) as exc:
        raise CheckpointError(f"{p}: malformed checkpoint: {exc}") from exc
    if expected_kind is not None and ckpt.kind != expected_kind:
        raise CheckpointError(f"{p}: checkpoint is a {ckpt.kind} policy, expected a {expected_kind}")
    if expected_spec is not None:
        diffs = expected_spec.differences(spec)
        if diffs:
            raise CheckpointError(f"{p}: checkpoint observation layout does not match: " + "; ".join(diffs))
    return ckpt


# ---- RNG state ---------------------------------------------------------------------------------
def capture_rng_state() -> dict[str, Any]:
    """Python, numpy (legacy global) and torch RNG states as checkpoint-safe data."""
    np_state = cast(tuple, np.random.get_state(legacy=True))
    py_version, py_internal, py_gauss = random.getstate()
    state: dict[str, Any] = {
        "python": {"version": py_version, "internal": list(py_internal), "gauss": py_gauss},
        "numpy": {"name": str(np_state[0]), "keys": torch.from_numpy(np.asarray(np_state[1]).astype(np.int64)),
                  "pos": int(np_state[2]), "has_gauss": int(np_state[3]), "cached_gaussian": float(np_state[4])},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["torch_cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of ``capture_rng_state``."""
    try:
        py = state["python"]
        random.setstate((py["version"], tuple(py["internal"]), py["gauss"]))
        npd = state["numpy"]
        keys = npd["keys"].numpy().astype(np.uint32)
        np.random.set_state((npd["name"], keys, npd["pos"], npd["has_gauss"], npd["cached_gaussian"]))
        torch.set_rng_state(state["torch"])
        if "torch_cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(list(state["torch_cuda"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"malformed RNG state in checkpoint: {exc}") from exc
