"""The ``Policy`` interface every backend implements, and what all backends share.

``read_policy_file`` parses an exported ONNX file once (protobuf via ``onnx``; no weights are run)
and returns the model bytes, its ``PolicyContract`` and its golden pairs, so each backend only
builds an engine. ``check_observation`` is the one place inputs are validated: a wrong width or a
NaN fails with a message that names the offending observation term, never with garbage actions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from intermimic_policy.contract import GOLDEN_KEY, ContractError, GoldenPairs, PolicyContract
from intermimic_policy.errors import IntermimicError


class PolicyLoadError(IntermimicError):
    """A policy file that cannot be used (missing, corrupt, truncated, not a policy, no backend)."""


class PolicyInputError(IntermimicError, ValueError):
    """An observation the policy must not be run on (wrong shape, NaN or inf)."""


class PolicyOutputError(PolicyLoadError):
    """A graph whose actual output does not have the contract's exact shape (never broadcast)."""


@runtime_checkable
class Policy(Protocol):
    """A loaded policy: ``policy(obs [B, D] float32) -> actions [B, 153] float32`` (unclamped mean)."""

    contract: PolicyContract
    backend_name: str

    def __call__(self, obs: np.ndarray) -> np.ndarray: ...


@dataclass(frozen=True, eq=False)
class PolicyFile:
    path: Path
    model_bytes: bytes
    contract: PolicyContract
    golden: GoldenPairs | None
    metadata: dict[str, str]
    input_shape: tuple[int | str, ...]
    output_shape: tuple[int | str, ...]


# operators an int8-quantized graph (``onnxruntime.quantization``: dynamic or static) is made of
_INT8_OPS = frozenset({"DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QuantizeLinear", "DequantizeLinear",
                       "QLinearMatMul", "QLinearConv", "QGemm", "DynamicQuantizeMatMul", "MatMulIntegerToFloat"})


def graph_precision(model: Any) -> str:
    """The arithmetic an ONNX graph computes in: "int8" (quantized operators), "fp16" (half
    weights) or "fp32"."""
    import onnx

    if any(node.op_type in _INT8_OPS for node in model.graph.node):
        return "int8"
    if any(t.data_type == onnx.TensorProto.FLOAT16 for t in model.graph.initializer):
        return "fp16"
    return "fp32"


def check_precision(graph: str, contract: PolicyContract, source: str) -> None:
    """Refuse a graph whose arithmetic its contract does not declare (and the reverse): a reduced
    precision is deployable only with the closed-loop acceptance the contract carries."""
    if graph == contract.precision:
        return
    if graph == "fp32" and contract.precision == "fp16":
        return  # an fp16 acceptance of an fp32 graph: the engine is built in fp16
    raise PolicyLoadError(f"{source}: the graph computes in {graph} but its contract declares {contract.precision}; "
                          "a reduced precision is only deployable with a contract that declares it and the "
                          "closed-loop check it passed (python -m intermimic_policy.runtime.quantize_cli)")


def read_policy_file(path: str | os.PathLike[str]) -> PolicyFile:
    """Parse an exported policy; every failure is a ``PolicyLoadError`` that names the file."""
    import onnx
    from google.protobuf.message import DecodeError

    p = Path(path)
    if not p.is_file():
        raise PolicyLoadError(f"{p}: policy file not found")
    data = p.read_bytes()
    if not data:
        raise PolicyLoadError(f"{p}: policy file is empty")
    try:
        model = onnx.load_model_from_string(data)
    except (DecodeError, ValueError, RuntimeError) as exc:
        raise PolicyLoadError(f"{p}: not a readable ONNX model (corrupt or truncated): {exc}") from exc
    if not model.graph.node or not model.graph.output:
        raise PolicyLoadError(f"{p}: not a readable ONNX model (no graph; corrupt, truncated or not ONNX)")
    meta = {prop.key: prop.value for prop in model.metadata_props}
    try:
        contract = PolicyContract.from_metadata(meta, source=str(p))
        golden = GoldenPairs.from_metadata(meta[GOLDEN_KEY], str(p)) if GOLDEN_KEY in meta else None
    except ContractError as exc:
        raise PolicyLoadError(str(exc)) from exc

    check_precision(graph_precision(model), contract, str(p))
    init_names = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in init_names]

    def shape(vi: onnx.ValueInfoProto) -> tuple[int | str, ...]:
        return tuple(d.dim_value if d.HasField("dim_value") else d.dim_param
                     for d in vi.type.tensor_type.shape.dim)

    by_in = {i.name: i for i in inputs}
    by_out = {o.name: o for o in model.graph.output}
    if list(by_out) != [contract.output_name]:
        raise PolicyLoadError(f"{p}: graph outputs {list(by_out)}; the contract declares exactly one, "
                              f"{contract.output_name!r}")
    if contract.input_name not in by_in or contract.output_name not in by_out:
        raise PolicyLoadError(f"{p}: graph inputs {list(by_in)} / outputs {list(by_out)} do not include the "
                              f"contract's {contract.input_name!r} / {contract.output_name!r}")
    in_shape, out_shape = shape(by_in[contract.input_name]), shape(by_out[contract.output_name])
    if len(in_shape) != 2 or in_shape[1] != contract.input_dim:
        raise PolicyLoadError(f"{p}: graph input {contract.input_name!r} has shape {list(in_shape)}, but the "
                              f"contract's observation has {contract.input_dim} dims")
    if len(out_shape) != 2 or out_shape[1] != contract.output_dim:
        raise PolicyLoadError(f"{p}: graph output {contract.output_name!r} has shape {list(out_shape)}, but "
                              f"the contract has {contract.output_dim} joints")
    if golden is not None and (golden.inputs.shape[1] != contract.input_dim
                               or golden.outputs.shape[1] != contract.output_dim):
        raise PolicyLoadError(f"{p}: golden pairs {golden.inputs.shape} -> {golden.outputs.shape} do not "
                              f"match the contract ({contract.input_dim} -> {contract.output_dim})")
    return PolicyFile(p, data, contract, golden, meta, in_shape, out_shape)


def check_actions(actions: np.ndarray, batch: int, contract: PolicyContract, source: str = "policy") -> np.ndarray:
    """The graph's output, refused unless exactly [batch, output_dim] float32 (no broadcasting later)."""
    shape = tuple(np.shape(actions))
    if shape != (batch, contract.output_dim):
        raise PolicyOutputError(f"{source}: graph output {contract.output_name!r} has shape {list(shape)} for a batch "
                                f"of {batch}, but the contract has {contract.output_dim} joints: expected "
                                f"[{batch}, {contract.output_dim}]")
    return np.asarray(actions, dtype=np.float32)


def _term_at(contract: PolicyContract, index: int) -> str:
    """'term (token k, ref +d)' for a flat observation index."""
    token, within = divmod(index, contract.block_dim)
    for name, sl in contract.observation.term_slices().items():
        if sl.start <= within < sl.stop:
            return f"{name}[{within - sl.start}] of token {token} (ref +{contract.ref_offsets[token]})"
    return f"index {index}"


def check_observation(obs: np.ndarray, contract: PolicyContract, source: str = "policy") -> np.ndarray:
    """Validate and return ``obs`` as a C-contiguous float32 [B, D] array."""
    a = np.asarray(obs)
    if a.ndim != 2 or a.shape[1] != contract.input_dim:
        hint = " (add a batch axis: obs[None])" if a.ndim == 1 and a.shape[0] == contract.input_dim else ""
        raise PolicyInputError(f"{source}: observation has shape {list(a.shape)}, expected "
                               f"[batch, {contract.input_dim}] ({contract.num_tokens} tokens x "
                               f"{contract.block_dim}, ref offsets {list(contract.ref_offsets)}){hint}")
    if a.shape[0] == 0:
        raise PolicyInputError(f"{source}: observation batch is empty")
    if not np.issubdtype(a.dtype, np.number):
        raise PolicyInputError(f"{source}: observation dtype {a.dtype} is not numeric")
    a = np.ascontiguousarray(a, dtype=np.float32)
    finite = np.isfinite(a)
    if not finite.all():
        rows, cols = np.nonzero(~finite)
        raise PolicyInputError(f"{source}: observation contains {rows.size} NaN/inf value(s); first at "
                               f"row {rows[0]}, {_term_at(contract, int(cols[0]))}")
    return a
