"""An int8 policy from an exported fp32 one, accepted by a closed-loop check, not a tolerance.

Why: the teacher's fp32 inference is most of the node's tick on a small CPU; ONNX Runtime's
dynamic int8 quantization (weights int8, activations quantized per call) runs it in about half
the time (by default only the input layer, which holds most of the weights). Its outputs differ from fp32 by far more than the golden tolerance, so whether the
quantized policy is as good is decided the way a policy is judged: both run closed loop on the
same clip (``sim.evaluate``, the ``intermimic eval`` path), and the int8 one is accepted when it
has the same success and its E_h is within ``tolerance_cm`` of the fp32 one's. The result is
written into the new file's contract (``precision: int8`` and the ``PrecisionAcceptance``); the
runtime refuses an int8 graph without it. Golden pairs are re-recorded from the int8 graph (same
inputs), so loading still proves the weights are the ones accepted.

    python -m intermimic_policy.runtime.quantize_cli SRC.onnx DST.onnx [--tolerance-cm 1.0] [--int8-layers 1]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from intermimic_policy.atomic import atomic_output
from intermimic_policy.contract import GOLDEN_KEY, GoldenPairs, PolicyContract, PrecisionAcceptance
from intermimic_policy.errors import IntermimicError
from intermimic_policy.runtime.base import PolicyFile, PolicyLoadError, graph_precision, read_policy_file
from intermimic_policy.runtime.onnxruntime_backend import OnnxRuntimePolicy

DEFAULT_TOLERANCE_CM = 1.0
DEFAULT_INT8_LAYERS = 1
EXAMPLE_CLIP = "example (make_example_motion seed 0)"


class QuantizeError(IntermimicError):
    """The policy cannot be quantized, or its int8 version fails the closed-loop acceptance."""


def quantized_graph(src: PolicyFile, layers: int = DEFAULT_INT8_LAYERS) -> Any:
    """``src`` with its first ``layers`` weight layers dynamically int8-quantized (weights per
    output channel), the rest fp32 (the metadata is still fp32's). The input layer holds most of
    the weights (3198 x 512 of the teacher) and of the time; the later layers steer the actions
    most directly, so by default only the first is quantized."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    graph = onnx.load_model_from_string(src.model_bytes)
    weight_layers = [n.name for n in graph.graph.node if n.op_type in ("Gemm", "MatMul") and
                     any(i in {t.name for t in graph.graph.initializer} for i in n.input)]
    if not 1 <= layers <= len(weight_layers):
        raise QuantizeError(f"{src.path}: has {len(weight_layers)} weight layers; cannot quantize {layers}")
    # the quantizer turns a Gemm into <name>_MatMul + <name>_Add before quantizing it
    keep = [f"{n}{suffix}" for n in weight_layers[layers:] for suffix in ("", "_MatMul")]
    with tempfile.TemporaryDirectory(prefix="intermimic_quantize_") as d:
        fp32, int8 = Path(d) / "fp32.onnx", Path(d) / "int8.onnx"
        fp32.write_bytes(src.model_bytes)
        quantize_dynamic(str(fp32), str(int8), weight_type=QuantType.QInt8, per_channel=True, nodes_to_exclude=keep)
        model = onnx.load(str(int8))
    done = sum(n.op_type == "MatMulInteger" for n in model.graph.node)
    if graph_precision(model) != "int8" or done != layers:
        raise QuantizeError(f"{src.path}: quantization made {done} int8 layers, expected {layers}")
    return model


def with_contract(model: Any, contract: PolicyContract, golden: GoldenPairs) -> bytes:
    del model.metadata_props[:]
    for key, value in contract.to_metadata().items():
        model.metadata_props.add(key=key, value=value)
    model.metadata_props.add(key=GOLDEN_KEY, value=golden.to_metadata())
    return bytes(model.SerializeToString())


def closed_loop(policy: Any) -> tuple[bool, float]:
    """(success, E_h cm) of an eval policy on the bundled example clip, as ``intermimic eval --example``."""
    from intermimic_policy.motion.example import make_example_motion
    from intermimic_policy.sim.evaluate import EvalSettings, evaluate

    report = evaluate([make_example_motion(seed=0)], policy, EvalSettings(progress=False, threads=1))
    s = report.summary()
    return bool(s["successes"] == s["attempts"]), float(s["E_h_cm"])


def quantize(src_path: str | os.PathLike[str], dst_path: str | os.PathLike[str],
             tolerance_cm: float = DEFAULT_TOLERANCE_CM, layers: int = DEFAULT_INT8_LAYERS) -> PrecisionAcceptance:
    """Write the accepted int8 version of ``src_path`` to ``dst_path`` (nothing is written when it
    fails the acceptance: ``QuantizeError`` gives both policies' figures)."""
    from intermimic_policy.sim.evaluate import OnnxPolicy, load_onnx_policy

    if not (np.isfinite(tolerance_cm) and tolerance_cm > 0):
        raise QuantizeError(f"tolerance must be a positive number of cm, got {tolerance_cm}")
    src = read_policy_file(src_path)
    if src.contract.precision != "fp32":
        raise QuantizeError(f"{src.path}: is already {src.contract.precision}; quantize the fp32 policy")
    if src.golden is None:
        raise QuantizeError(f"{src.path}: has no golden pairs to re-record")
    model = quantized_graph(src, layers)
    reference = load_onnx_policy(str(src.path))  # the fp32 policy as eval runs it (golden-checked)
    # the candidate: the int8 graph under the fp32 contract, outside the loader (it is not accepted yet)
    candidate_file = dataclasses.replace(src, model_bytes=bytes(model.SerializeToString()))
    candidate = OnnxRuntimePolicy(candidate_file)
    golden = GoldenPairs(src.golden.inputs, candidate(src.golden.inputs), atol=src.golden.atol)
    ref_success, ref_e_h = closed_loop(reference)
    success, e_h = closed_loop(OnnxPolicy(f"onnx:{Path(dst_path).name}", candidate, reference.config_overrides))
    acceptance = PrecisionAcceptance(
        reference_sha256=hashlib.sha256(src.model_bytes).hexdigest(), clip=EXAMPLE_CLIP,
        reference_success=ref_success, success=success, reference_e_h_cm=ref_e_h, e_h_cm=e_h,
        tolerance_cm=float(tolerance_cm))
    if not acceptance.passed:
        raise QuantizeError(f"{src.path}: the int8 policy fails the closed-loop acceptance {acceptance.describe()}; "
                            "nothing written")
    contract = dataclasses.replace(src.contract, precision="int8", precision_acceptance=acceptance,
                                   provenance={**src.contract.provenance, "quantized_from": src.path.name,
                                               "int8_layers": layers})
    with atomic_output(dst_path) as handle:
        handle.write(with_contract(model, contract, golden))
    try:
        read_policy_file(dst_path)  # what the runtime will see
    except PolicyLoadError as exc:
        raise QuantizeError(f"{dst_path}: written but not loadable: {exc}") from exc
    return acceptance


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("src", help="exported fp32 policy (.onnx)")
    parser.add_argument("dst", help="where the accepted int8 policy goes")
    parser.add_argument("--tolerance-cm", type=float, default=DEFAULT_TOLERANCE_CM,
                        help="largest accepted E_h difference from the fp32 policy on the example clip")
    parser.add_argument("--int8-layers", type=int, default=DEFAULT_INT8_LAYERS,
                        help="how many weight layers, from the input, are quantized (the rest stay fp32)")
    args = parser.parse_args(argv)
    try:
        acceptance = quantize(args.src, args.dst, args.tolerance_cm, args.int8_layers)
    except IntermimicError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {args.dst}: int8, accepted {acceptance.describe()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
