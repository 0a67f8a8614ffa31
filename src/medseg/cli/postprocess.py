"""``medseg postprocess``: decide on a 3D dataset's val split which classes of a planned 3D model keep only their
largest connected component, and write the weights with that decision in their plan."""

from __future__ import annotations

import argparse
import json

from ..errors import InputError
from .options import volume_model


def cmd_postprocess(args: argparse.Namespace) -> int:
    import dataclasses

    from safetensors.torch import save

    from ..data.datasets import dataset_cases, dataset_files
    from ..eval.postprocess import decide_keep_largest
    from ..io.outputs import plan_outputs, write_bytes, write_text
    from ..models.build import VOLUMETRIC

    if args.model not in VOLUMETRIC:
        raise InputError(f"model {args.model!r} is not a planned 3D model; give one of {', '.join(sorted(VOLUMETRIC))}")
    if args.split == "test":
        raise InputError("--split test: a decision made on the test split would be scored on it; decide on val "
                         "(the default) or train")
    dataset_cases(args.dataset, args.split)  # a wrong folder or split fails before the model loads
    inputs = [args.checkpoint] if args.checkpoint else []
    outputs = plan_outputs({"--out": args.out, "--json": args.json}, inputs=inputs,
                           protected=dataset_files(args.dataset), overwrite=args.overwrite)
    model = volume_model(args)
    decision = decide_keep_largest(model, args.dataset, args.split, args.limit, progress=not args.no_progress)
    print(f"{args.model} on {args.dataset} ({args.split}, {len(decision['cases'])} volumes): mean Dice per class")
    print(f"{'class':<8}{'raw':>8}{'largest':>9}  keep largest component")
    for class_id, entry in decision["classes"].items():
        print(f"{class_id:<8}{entry['raw']:>8.4f}{entry['largest']:>9.4f}  {'yes' if entry['keep'] else 'no'}")
    model.set_plan(dataclasses.replace(model.plan, keep_largest=decision["keep_largest"]))
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in model.state_dict().items()}
    header = {"model": args.model, "postprocess": json.dumps(decision)}
    print(f"wrote {write_bytes(outputs['--out'], save(tensors, metadata=header))} "
          f"(keep_largest {decision['keep_largest'] or 'none'}; use it with --model {args.model} --checkpoint)")
    if outputs["--json"] is not None:
        print(f"wrote {write_text(outputs['--json'], json.dumps(decision, indent=2) + chr(10))}")
    return 0
