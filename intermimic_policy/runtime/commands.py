"""``intermimic policy info FILE.onnx [--json] [--verify]``: show a policy's contract.

Reads only the file's metadata (``read_policy_file``): it works without running the model, and
``--json`` prints exactly ``PolicyContract.to_dict()`` so scripts can diff two policies.
"""

from __future__ import annotations

import argparse
import json

from intermimic_policy.runtime.base import PolicyFile, read_policy_file


def _text(pf: PolicyFile) -> str:
    c = pf.contract
    spec = c.observation
    norm = "baked into the graph" if c.normalization is not None else "none recorded"
    if c.normalization is not None:
        norm += f" (eps {c.normalization.eps:g}, clip +-{c.normalization.clip:g}, count {c.normalization.count:g})"
    golden = f"{len(pf.golden.inputs)} pairs, atol {pf.golden.atol:g}" if pf.golden is not None else "none"
    lines = [
        f"{pf.path}  ({len(pf.model_bytes) / 1e6:.1f} MB)",
        f"  kind          {c.kind} ({c.embodiment}), contract v{c.contract_version}, {c.created_by}",
        f"  input         {c.input_name!r} [batch, {c.input_dim}] = {c.num_tokens} tokens x {c.block_dim}, "
        f"ref offsets {list(c.ref_offsets)} (obs spec v{spec.version}, {len(spec.terms)} terms)",
        f"  output        {c.output_name!r} [batch, {c.output_dim}] unclamped mean; clamp to +-{c.action_clip:g}, "
        "target = offset + scale * a",
        f"  joints        {c.output_dim} DOF: {c.joint_names[0]} ... {c.joint_names[-1]}",
        f"  gains         kp {min(c.kp):g}..{max(c.kp):g}, kd {min(c.kd):g}..{max(c.kd):g}",
        f"  rates         control {c.control_hz:g} Hz, physics {c.physics_hz:g} Hz",
        f"  quaternions   {c.quaternion_convention}",
        f"  normalisation {norm}",
        f"  model hash    {c.model_hash}",
        f"  config digest {c.config_digest or '-'}",
        f"  golden        {golden}",
        f"  contract      digest {c.digest()}",
    ]
    return "\n".join(lines)


def _info(args: argparse.Namespace) -> int:
    pf = read_policy_file(args.file)
    if args.verify:
        from intermimic_policy.runtime.loader import load_policy

        load_policy(args.file, backend="onnxruntime", verify_golden=True)
    if args.json:
        print(json.dumps(pf.contract.to_dict(), indent=2))
    else:
        print(_text(pf))
        if args.verify:
            print("  verified      golden pairs reproduced by onnxruntime")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    policy = subparsers.add_parser("policy", help="inspect exported policies")
    sub = policy.add_subparsers(dest="policy_command", required=True, metavar="ACTION")
    info = sub.add_parser("info", help="print a policy's deployment contract")
    info.add_argument("file", help="exported policy (.onnx)")
    info.add_argument("--json", action="store_true", help="print the full contract as JSON")
    info.add_argument("--verify", action="store_true",
                      help="also run the golden pairs on onnxruntime (fails if they do not reproduce)")
    info.set_defaults(func=_info)
