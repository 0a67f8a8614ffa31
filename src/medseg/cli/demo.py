"""``medseg demo``: the built-in real images (or the user's PATH) segmented from a box and from one click."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import InputError
from .options import is_volume, predictor_for, write_outputs


def cmd_demo(args: argparse.Namespace) -> int:
    from ..demo import DEMO_CASES, fresh_folder
    from ..infer.files import segment_file

    predictor = predictor_for(args)
    out_dir = fresh_folder(args.out)
    if args.path is not None:
        cases = [(args.path, _own_demo_prompts(args), "your image")]
    else:
        cases = [(c.locate(), [("box", {"boxes": [list(c.box)]}), ("click", {"points": [list(c.click)]})], c.what)
                 for c in DEMO_CASES]
    print(f"medseg demo: {len(cases)} image(s), model {args.model}, outputs in {out_dir}")
    for path, prompts, what in cases:
        stem = Path(path).name.split(".")[0]
        print(f"  {what}:")
        for tag, prompt in prompts:
            if "boxes" in prompt and is_volume(path):
                from ..io import read_image

                (x0, y0, x1, y1), z = prompt["boxes"][0], read_image(path).array.shape[1] // 2
                prompt = {"boxes": [[x0, y0, z, x1, y1, z]]}
            result = segment_file(predictor, path, progress=False, **prompt)
            suffix = ".png" if result.labels.shape[0] == 1 else ".nii.gz"
            mask, ov = write_outputs(result, out_dir / f"{stem}_{tag}_mask{suffix}",
                                      out_dir / f"{stem}_{tag}_overlay.png", False)
            score = f", predicted IoU {result.scores[0]:.2f}" if result.scores else ""
            print(f"    {_demo_prompt_text(tag, prompt)}: {int((result.labels > 0).sum())} pixels{score}\n"
                  f"      mask {mask}\n      overlay {ov}")
    return 0


def _own_demo_prompts(args: argparse.Namespace) -> list[tuple[str, dict]]:
    """The demo's prompts on the user's PATH: --box and/or --point, else the central box."""
    prompts = []
    if args.box or not args.point:
        box = args.box
        if box is None:
            from ..io import read_image

            h, w = read_image(args.path).array.shape[-2:]
            box = [w / 4, h / 4, 3 * w / 4, 3 * h / 4]
            print(f"  no --box given: using the central box {[round(v) for v in box]}")
        prompts.append(("box", {"boxes": [list(box)]}))
    if args.point:
        if is_volume(args.path):
            raise InputError(f"{args.path}: a click on a volume is not supported yet; give --box")
        prompts.append(("click", {"points": [list(args.point)]}))
    return prompts


def _demo_prompt_text(tag: str, prompt: dict) -> str:
    values = prompt["boxes"][0] if tag == "box" else prompt["points"][0]
    return f"{'box' if tag == 'box' else 'one click at'} {[round(v) for v in values]}"
