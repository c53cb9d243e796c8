"""``intermimic export``: a checkpoint (or a random-init policy) to an ONNX file with its contract.

The contract (rates, action map, observation, object points, skeleton) comes from the checkpoint,
where training stored it: there are no flags that could contradict it.

    intermimic export CHECKPOINT --out policy.onnx [--opset 17]
    intermimic export --init random --kind teacher|student --out policy.onnx [--seed 0] [--robot g1]

torch and the exporters are imported inside the handler, so the rest of the CLI stays fast.
"""

from __future__ import annotations

import argparse

from intermimic_policy.errors import IntermimicError


def _export(args: argparse.Namespace) -> int:
    from training.export import ExportConfig, export_checkpoint, export_random

    config = ExportConfig(opset=args.opset)
    if args.init == "random":
        if args.checkpoint:
            raise IntermimicError("export: give either CHECKPOINT or --init random, not both")
        if not args.kind:
            raise IntermimicError("export --init random needs --kind teacher|student")
        result = export_random(args.kind, args.out, seed=args.seed, model_hash=args.model_hash, config=config,
                               robot=args.robot)
    else:
        if not args.checkpoint:
            raise IntermimicError("export: give a CHECKPOINT, or --init random --kind teacher|student")
        if args.kind or args.model_hash or args.robot:
            raise IntermimicError("export: --kind, --model-hash and --robot come from the checkpoint; use them "
                                  "only with --init random")
        result = export_checkpoint(args.checkpoint, args.out, config=config)
    c = result.contract
    print(f"wrote {result.path} ({result.size_bytes / 1e6:.1f} MB): {c.kind} policy, obs [batch, {c.input_dim}] "
          f"-> actions [batch, {c.output_dim}], {result.exporter} exporter, opset {result.opset}, "
          f"torch vs onnxruntime max abs error {result.max_error:.2e}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", help="export a policy to ONNX with its deployment contract")
    p.add_argument("checkpoint", nargs="?", help="training checkpoint (.pt) to export")
    p.add_argument("--out", required=True, help="output .onnx file (written atomically)")
    p.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17)")
    p.add_argument("--init", choices=["random"], help="export a freshly initialised policy instead")
    p.add_argument("--kind", choices=["teacher", "student"], help="policy kind for --init random")
    p.add_argument("--seed", type=int, default=0, help="seed for --init random (default 0)")
    p.add_argument("--model-hash", help="model hash for --init random (default: the default humanoid's)")
    p.add_argument("--robot", help="for --init random: a robot (e.g. g1, config/robots/<name>.yaml) instead of "
                                   "the SMPL-X humanoid")
    p.set_defaults(func=_export)
