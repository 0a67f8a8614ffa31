"""Fine-tuning benchmark: zero-shot LiteMedSAM vs decoder-only fine-tuning vs a MONAI U-Net, same CPU budget.

Per dataset (kvasir_seg, ph2_derm, busi of ../shared/data), on its fixed splits:

1. embeddings of the train, val and test images with the frozen LiteMedSAM encoder, cached on disk
   (``--cache DIR``, default ``~/.cache/medseg/embeddings``; never inside the data folder);
2. zero-shot: test-split box Dice of pretrained LiteMedSAM, scored by ``medseg.eval.evaluate_case``
   (one box per GT component >= 20 px, union of the masks vs the class mask; busi's normal images
   are empty-GT cases) with a predictor that takes each test image's embedding from the cache;
3. fine-tuned: ``configs/finetune_cached_kvasir.yaml`` (objective "supervised_cached", mask decoder
   only, box jitter 0.1) on the dataset's train split for ``BUDGET_S`` seconds of wall-clock time,
   checkpoint selected by val Dice, then the same test-split box Dice;
4. click-trained: the same config with ``CLICK_SETTINGS`` (SAM-style chains: a box or one click, then
   corrective clicks with the previous logits fed back; ``medseg.train.interactive``), same budget;
   scored by Dice after each of ``CLICK_ROUNDS`` clicks (``medseg evaluate --prompt clicks``'s
   protocol: first click at the object's deepest pixel) against zero-shot, and by its box Dice;
5. U-Net: ``configs/unet_kvasir.yaml`` (MONAI UNet from scratch, automatic, no prompt) on the same
   train split for the same budget, best by val Dice, scored on the test split with the same Dice
   per (case, class) row (prediction = the U-Net's mask; an empty GT scores 1 only if it predicts
   nothing). The U-Net's budget excludes the LiteMedSAM embedding time (step 1).

Every run validates its starting weights first (epoch 0), so a fine-tuned checkpoint is the
pretrained one unless training improved val Dice.

Budget: one ``train()`` epoch is run and timed, then the run resumes for as many epochs as fit in
what is left (the loop itself is not changed); the seconds actually spent are reported.

    python benchmarks/finetune.py [--quick] [--json OUT] [--cache DIR] [--sets kvasir_seg busi]
    python benchmarks/finetune.py --whole-model --device cuda --budget 200 --sets kvasir_seg busi

``--whole-model`` (a GPU's job: one step of the whole model costs ~30 s at batch 4 on the 2-core CPU):
zero-shot against whole-model fine-tuning (encoder included, augmented images, bf16 autocast on CUDA,
``WHOLE_MODEL_SETTINGS``), test box Dice with the encoder run on the device; writes
``benchmarks/results/finetune_whole_model.json``.

``--quick``: ``QUICK_COUNTS`` evenly spaced train / val / test images per set (a folder of links in
a temporary directory), ``QUICK_BUDGET_S`` per method and set, batch 4. Its Dice values are noisy
(six test images) and its budgets tiny: a smoke test of the protocol, not a result. A full run embeds
~600 images once (~20 min at ~2 s each, then cached) and trains 3 x 3 x ``BUDGET_S`` s.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, EMBEDDING_CACHE, REPO, THREADS, require_data, set_roots, set_threads, timed_train, write_json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

from medseg.data.cases import load_image, plane  # noqa: E402
from medseg.data.datasets import dataset_cases  # noqa: E402
from medseg.eval.automatic import score_label_maps  # noqa: E402
from medseg.eval.evaluate import evaluate_case  # noqa: E402
from medseg.eval.interactive import interact_case  # noqa: E402
from medseg.eval.report import Report  # noqa: E402
from medseg.io import read_label  # noqa: E402
from medseg.models import build_model  # noqa: E402
from medseg.models.unet import predict_label_map  # noqa: E402
from medseg.train import ddp, load_config  # noqa: E402
from medseg.train.cached import split_embeddings  # noqa: E402
from medseg.train.embeddings import CachedPredictor, build_embeddings  # noqa: E402
from medseg.train.objectives import RunContext  # noqa: E402

SETS = ["kvasir_seg", "ph2_derm", "busi"]
BUDGET_S = 240          # wall-clock seconds per method (fine-tuning, U-Net) and dataset, full run
QUICK_BUDGET_S = 15     # the same with --quick
CLICK_ROUNDS = 3        # clicks scored in the interactive protocol (first click + 2 corrections)
CLICK_SETTINGS = ["train.click_rounds=2", "train.first_prompt=mixed"]  # the click-trained decoder
QUICK_COUNTS = {"train": 10, "val": 3, "test": 6}
QUICK_SETTINGS = ["train.batch_size=4", "optim.warmup_steps=2"]  # a few objects: smaller steps, short warm-up
FINETUNE_CONFIG = REPO / "configs" / "finetune_cached_kvasir.yaml"
UNET_CONFIG = REPO / "configs" / "unet_kvasir.yaml"
COMMON = ["data.num_workers=0", "train.progress=false", "train.device=cpu", "train.amp=off", "train.log_every=1000",
          "model.weights=published"]  # the figures below start from the published decoder


def box_dice(model, store, cases, root: Path) -> tuple[float | None, int]:
    """Test-split box Dice (evaluate's protocol) with embeddings from ``store``; (dice, encoder misses)."""
    predictor = CachedPredictor(model, store) if store is not None else None
    rows = []
    for case in cases:
        rows += evaluate_case(predictor, case)[0]
    return Report(str(root), "test", "box", cases=rows).summary["dice"], predictor.misses if predictor else 0


def click_dice(model, store, cases) -> list[float] | None:
    """Mean Dice after each of ``CLICK_ROUNDS`` clicks (first a positive click at the object's deepest
    pixel, then one on the largest error), the interactive protocol of ``medseg evaluate --prompt clicks``."""
    predictor = CachedPredictor(model, store)
    rows = [row for case in cases for row in interact_case(predictor, case, CLICK_ROUNDS, first="point")]
    if not rows:
        return None
    return [round(float(np.mean([r["dice_per_round"][k] for r in rows])), 4) for k in range(CLICK_ROUNDS)]


def unet_dice(model, cases, root: Path) -> float | None:
    """Test-split Dice of the U-Net's automatic masks as class 1 (any foreground), by the automatic
    protocol (:func:`medseg.eval.automatic.score_label_maps`), one row per case."""
    rows, _ = score_label_maps(lambda case: predict_label_map({1: model}, plane(load_image(case))), cases, [1],
                               progress=False)
    return float(np.mean([r["dice"] for r in rows])) if rows else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def run_set(name: str, root: Path, work: Path, budget: float, cache: Path, quick: bool) -> dict:
    overrides = [f"data.root={root}", f"train.cache_dir={cache}", *COMMON, *(QUICK_SETTINGS if quick else [])]
    ft_config = load_config(FINETUNE_CONFIG, overrides)
    model = build_model(ft_config.model.name, pretrained=True, weights="published")
    resolved = dataclasses.replace(ft_config, data=dataclasses.replace(ft_config.data, image_size=model.image_size))
    start = time.perf_counter()
    run = RunContext(model, torch.device("cpu"), ddp.from_env(), cache)
    train_cases, _, train_store = split_embeddings(resolved, "train", run)
    val_cases, _, _ = split_embeddings(resolved, "val", run)
    test_cases = dataset_cases(root, "test")
    with_fg = [c for c in test_cases if read_label(c.mask_path).array.any()]
    test_store = build_embeddings(model, with_fg, cache, label=f"{name}-test") if with_fg else None
    embed_s = time.perf_counter() - start
    computed = train_store.computed + (test_store.computed if test_store else 0)
    print(f"{name}: embeddings ready in {embed_s:.0f} s ({len(train_cases)} train, {len(val_cases)} val, "
          f"{len(with_fg)} test images; train+test {computed} computed now)", flush=True)

    zero_shot, misses = box_dice(model, test_store, test_cases, root)
    print(f"{name}: zero-shot box Dice {_fmt(zero_shot)}", flush=True)
    finetune = timed_train(ft_config, work / f"{name}_finetune", budget)
    tuned = build_model(ft_config.model.name, checkpoint=finetune["checkpoint"])
    finetuned, misses2 = box_dice(tuned, test_store, test_cases, root)
    print(f"{name}: fine-tuned box Dice {_fmt(finetuned)} ({finetune['epochs']} epochs, {finetune['seconds']} s)",
          flush=True)

    clicks_config = load_config(FINETUNE_CONFIG, overrides + CLICK_SETTINGS)
    clicked = timed_train(clicks_config, work / f"{name}_clicks", budget)
    click_model = build_model(clicks_config.model.name, checkpoint=clicked["checkpoint"])
    with_clicks = {"zero_shot_point_dice": click_dice(model, test_store, with_fg),
                   "click_finetuned_point_dice": click_dice(click_model, test_store, with_fg),
                   "click_finetuned_box_dice": box_dice(click_model, test_store, test_cases, root)[0],
                   "training": {k: v for k, v in clicked.items() if k != "checkpoint"}}
    print(f"{name}: point-then-clicks Dice per click, zero-shot {with_clicks['zero_shot_point_dice']}, "
          f"click-trained {with_clicks['click_finetuned_point_dice']}; its box Dice "
          f"{_fmt(with_clicks['click_finetuned_box_dice'])}", flush=True)

    u_config = load_config(UNET_CONFIG, overrides)
    unet = timed_train(u_config, work / f"{name}_unet", budget)
    u_dice = unet_dice(build_model(u_config.model.name, checkpoint=unet["checkpoint"]), test_cases, root)
    print(f"{name}: U-Net Dice {_fmt(u_dice)} ({unet['epochs']} epochs, {unet['seconds']} s)", flush=True)
    clean = lambda r: {k: v for k, v in r.items() if k != "checkpoint"}  # noqa: E731
    return {"zero_shot_dice": zero_shot, "finetuned_dice": finetuned, "unet_dice": u_dice, "budget_s": budget,
            "finetune": clean(finetune), "unet": clean(unet), "embed_seconds": round(embed_s, 1),
            "encoder_misses": misses + misses2, "clicks": with_clicks,
            "images": {"train": len(dataset_cases(root, "train")), "val": len(dataset_cases(root, "val")),
                       "test": len(test_cases), "test_empty_gt": len(test_cases) - len(with_fg),
                       "train_embedded": len(train_cases), "val_embedded": len(val_cases)}}


WHOLE_MODEL_SETTINGS = ["model.trainable=all", "optim.lr=2e-5", "optim.warmup_steps=50", "train.batch_size=16",
                        "data.augment=true", "data.box_jitter=0.1", "data.num_workers=4", "train.amp=auto",
                        "train.progress=false", "train.log_every=1000"]


def run_whole_model(name: str, root: Path, work: Path, budget: float, device: str, weights: Path | None) -> dict:
    """Whole-model fine-tuning (encoder included, augmented images, bf16 on CUDA) for ``budget`` seconds;
    zero-shot and fine-tuned test box Dice with the image encoder run on ``device`` (no cache)."""
    from medseg.infer import Predictor

    start_from = [f"model.checkpoint={weights}", "model.pretrained=false"] if weights else []
    config = load_config(REPO / "configs" / "finetune_decoder_kvasir.yaml",
                         [f"data.root={root}", f"train.device={device}", *WHOLE_MODEL_SETTINGS, *start_from])
    base = build_model("litemedsam", pretrained=weights is None, checkpoint=weights)

    def dice(model) -> float:
        predictor = Predictor(model, device=device)
        rows = [row for case in dataset_cases(root, "test") for row in evaluate_case(predictor, case)[0]]
        return Report(str(root), "test", "box", cases=rows).summary["dice"]

    zero_shot = dice(base)
    print(f"{name}: zero-shot box Dice {_fmt(zero_shot)} ({device})", flush=True)
    run = timed_train(config, work / f"{name}_whole", budget)
    tuned = dice(build_model("litemedsam", checkpoint=run["checkpoint"]))
    print(f"{name}: whole-model fine-tuned box Dice {_fmt(tuned)} ({run['epochs']} epochs, {run['steps']} steps, "
          f"{run['seconds']} s)", flush=True)
    return {"zero_shot_dice": zero_shot, "whole_model_dice": tuned, "budget_s": budget,
            "training": {k: v for k, v in run.items() if k != "checkpoint"}}


def whole_model_main(args) -> int:
    budget = args.budget or BUDGET_S
    start = time.time()
    datasets = {}
    with tempfile.TemporaryDirectory(prefix="medseg_whole_") as tmp:
        for name in args.sets:
            datasets[name] = run_whole_model(name, args.data / name, Path(tmp), budget, args.device, args.weights)
    device = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    result = {"datasets": datasets, "device": device, "torch": torch.__version__, "budget_s": budget,
              "settings": WHOLE_MODEL_SETTINGS, "weights": str(args.weights.name) if args.weights else "published",
              "seconds": round(time.time() - start, 1)}
    print(f"\n{'dataset':<14}{'zero-shot':>10}{'whole model':>13}   (test box Dice; {budget:.0f} s on {device})")
    for name, r in datasets.items():
        print(f"{name:<14}{r['zero_shot_dice']:>10.4f}{r['whole_model_dice']:>13.4f}")
    out = args.json or REPO / "benchmarks" / "results" / "finetune_whole_model.json"
    print(f"\nwrote {write_json(result, out)} ({result['seconds']:.0f} s)")
    return 0


def print_table(result: dict) -> None:
    def f(v):
        return "   -  " if v is None else f"{v:6.3f}"

    print(f"\n{'dataset':<14}{'zero-shot':>10}{'fine-tuned':>12}{'U-Net':>8}{'budget':>9}   (test Dice; "
          f"box prompts for LiteMedSAM, none for the U-Net)")
    for name, r in result["datasets"].items():
        print(f"{name:<14}{f(r['zero_shot_dice']):>10}{f(r['finetuned_dice']):>12}{f(r['unet_dice']):>8}"
              f"{r['budget_s']:>7.0f} s")
    print(f"\n{'dataset':<14}{'clicks':>8}{'zero-shot':>11}{'click-trained':>15}   (test Dice after each click, "
          f"first at the object's deepest pixel)")
    for name, r in result["datasets"].items():
        zero, tuned = r["clicks"]["zero_shot_point_dice"] or [], r["clicks"]["click_finetuned_point_dice"] or []
        for k, (a, b) in enumerate(zip(zero, tuned)):
            print(f"{name if k == 0 else '':<14}{k + 1:>8}{f(a):>11}{f(b):>15}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help=f"{QUICK_COUNTS} images per set, {QUICK_BUDGET_S} s budgets")
    parser.add_argument("--json", type=Path, help="output JSON (default benchmarks/results/finetune[_quick].json)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache (default ~/.cache/medseg/embeddings)")
    parser.add_argument("--sets", nargs="+", default=SETS, choices=SETS, help="datasets to run")
    parser.add_argument("--whole-model", action="store_true",
                        help="instead: zero-shot vs whole-model fine-tuning (a GPU's job; --device cuda)")
    parser.add_argument("--device", default="cpu", help="with --whole-model: cpu or cuda")
    parser.add_argument("--budget", type=float, help=f"with --whole-model: seconds per set (default {BUDGET_S})")
    parser.add_argument("--weights", type=Path,
                        help="with --whole-model: LiteMedSAM weights file (e.g. a float16 safetensors copy where the "
                             "package is not installed); default the published ones")
    args = parser.parse_args(argv)
    if args.whole_model:
        set_threads()
        torch.manual_seed(0)
        return whole_model_main(args)
    require_data(args.data)
    cache = (args.cache or EMBEDDING_CACHE).expanduser().resolve()
    if cache == args.data.resolve() or args.data.resolve() in cache.parents:
        sys.exit(f"--cache {cache} lies inside the data folder {args.data}; choose another folder")
    set_threads()
    torch.manual_seed(0)
    budget = QUICK_BUDGET_S if args.quick else BUDGET_S
    start = time.time()
    datasets = {}
    with tempfile.TemporaryDirectory(prefix="medseg_finetune_") as tmp:
        work = Path(tmp)
        for name, root in set_roots(args.data, args.sets, work, QUICK_COUNTS if args.quick else None):
            datasets[name] = run_set(name, root, work / "runs", budget, cache, args.quick)
    result = {"datasets": datasets, "quick": args.quick, "counts": QUICK_COUNTS if args.quick else None,
              "budget_s": budget, "threads": THREADS, "device": "cpu", "seconds": round(time.time() - start, 1),
              "cache": str(cache), "torch": torch.__version__,
              "notes": ["budget_s: wall-clock seconds per method and dataset; embedding time (embed_seconds) "
                        "is outside both budgets, so the U-Net's budget excludes it",
                        "checkpoints selected by val Dice; Dice on the test split",
                        "quick: evenly spaced subsets of each split (counts); noisy, a protocol smoke test"]}
    print_table(result)
    out = args.json or REPO / "benchmarks" / "results" / f"finetune{'_quick' if args.quick else ''}.json"
    print(f"\nwrote {write_json(result, out)} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
