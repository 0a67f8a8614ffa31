"""Parameter-efficient fine-tuning, side by side on the same wall-clock budget (issue #16).

Per dataset (isbi2012_em's membranes, dsb2018_nuclei, drishti_gs1_odoc's disc and cup, and kvasir_seg as
the saturated check), LiteMedSAM from its published weights, fine-tuned on the train split by each
method for ``BUDGET_S`` seconds of wall-clock time on the 2-core CPU (bf16 autocast, batch 4, box
prompts with 10% jitter), the checkpoint chosen by val Dice (the starting weights are validated
first, so a run never ends below them on val), then scored on the test split by ``medseg evaluate``'s
box protocol (:func:`medseg.eval.evaluate.evaluate_case`: one box per component, Dice / HD95 / NSD
per class):

=================  ====================================================================================
method             what trains (``configs/finetune_peft.yaml`` + these keys)
=================  ====================================================================================
zero_shot          nothing: the published weights
decoder            the whole mask decoder (4.1 M) on cached embeddings (objective supervised_cached)
implicit           the same + I-MedSAM's implicit decoder (``model.decoder: implicit``)
adapters           SAM-Med2D bottleneck adapters in every encoder block + the decoder's heads
lora               rank-8 low-rank updates of the encoder's projections + the decoder's heads
conv_branch        SAM-UNet's conv branch beside the frozen encoder (cached embeddings) + the heads
frequency_adapter  I-MedSAM's frequency adapters + the heads
imedsam            frequency adapters + the implicit decoder (I-MedSAM)
whole              every parameter (encoder included; lr 5e-5)
=================  ====================================================================================

"the decoder's heads": every part of the mask decoder but its two-way transformer (``models/peft.py``).
Each run is a fresh process (``/usr/bin/time -v``: ``peak_mb`` is the training process's peak resident
memory); ``epochs`` and ``steps`` are what fit in the budget (``steps_per_epoch`` caps an epoch so that
the budget is checked often). Embeddings are cached first, outside every budget.

    python benchmarks/peft.py [--quick] [--json OUT] [--sets isbi2012_em ...] [--methods lora ...]
    python benchmarks/peft.py --device cuda --budget 600      # on a GPU (the runs use bf16 there too)
    python benchmarks/peft.py --sets kvasir_seg --merge benchmarks/results/peft.json   # add a set to a result

The JSON is written after every set (``sets_done``), so a stopped run keeps what it measured.

``--quick``: ``QUICK_COUNTS`` images per split, ``QUICK_BUDGET_S`` per run: a smoke test of the
protocol, not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (DEFAULT_DATA, EMBEDDING_CACHE, REPO, THREADS, peak_mb_from_time, require_data,  # noqa: E402
                     set_roots, set_threads, timed_train, write_json)

SETS = ["isbi2012_em", "dsb2018_nuclei", "drishti_gs1_odoc", "kvasir_seg"]
FINE_SETS = ("isbi2012_em", "dsb2018_nuclei", "drishti_gs1_odoc/cup")  # where the targets are judged
BUDGET_S = 120
QUICK_BUDGET_S = 20
QUICK_COUNTS = {"train": 6, "val": 2, "test": 3}
CONFIG = REPO / "configs" / "finetune_peft.yaml"
CACHED = ["train.objective=supervised_cached", "train.steps_per_epoch=40", "data.augment=false"]
METHODS: dict[str, list[str]] = {
    "decoder": ["model.trainable=decoder", *CACHED],
    "implicit": ["model.trainable=decoder", "model.decoder=implicit", *CACHED],
    "adapters": ["model.trainable=adapters"],
    "lora": ["model.trainable=lora"],
    "conv_branch": ["model.trainable=conv_branch", *CACHED],
    "frequency_adapter": ["model.trainable=frequency_adapter"],
    "imedsam": ["model.trainable=frequency_adapter", "model.decoder=implicit"],
    "whole": ["model.trainable=all", "optim.lr=5.0e-5"],
}
QUICK_SETTINGS = ["optim.warmup_steps=2", "train.steps_per_epoch=2"]
CLASS_NAMES = {"drishti_gs1_odoc": {"class_1": "disc", "class_2": "cup"}}  # ../shared/data/INDEX.md (disc: outside the cup)
SET_SETTINGS = {"dsb2018_nuclei": ["data.val_limit=3"]}  # ~30 nuclei an image: each is an item of its own


def overrides(name: str, root: Path, method: str, cache: Path, device: str, quick: bool) -> list[str]:
    return [f"data.root={root}", f"train.cache_dir={cache}", f"train.device={device}", *METHODS[method],
            *SET_SETTINGS.get(name, []), *(QUICK_SETTINGS if quick else [])]


def child(args) -> int:
    """One budgeted training run (in its own process, for its peak memory): writes the run summary."""
    from medseg.models import build_model
    from medseg.train import load_config
    from medseg.train.optim import select_trainable

    set_threads()
    config = load_config(CONFIG, json.loads(args.child_overrides))
    summary = timed_train(config, args.work, args.budget)
    model = build_model(config.model.name, checkpoint=summary["checkpoint"])
    trainable, total = select_trainable(model, config.model.trainable)
    summary.update(checkpoint=str(summary["checkpoint"]), trainable_params=trainable, total_params=total)
    args.child_out.write_text(json.dumps(summary))
    return 0


def train_in_child(name: str, root: Path, method: str, work: Path, budget: float, cache: Path, device: str,
                   quick: bool) -> dict:
    out = work / "summary.json"
    work.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, __file__, "--child-overrides",
               json.dumps(overrides(name, root, method, cache, device, quick)),
               "--work", str(work), "--budget", str(budget), "--child-out", str(out)]
    timer = ["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []
    env = {**os.environ, "OMP_NUM_THREADS": str(THREADS), "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(timer + command, capture_output=True, text=True, env=env)
    if done.returncode != 0 or not out.is_file():
        raise RuntimeError(f"{method} on {root.name} failed:\n{done.stdout[-1500:]}\n{done.stderr[-3000:]}")
    summary = json.loads(out.read_text())
    summary["peak_mb"] = peak_mb_from_time(done.stderr) if timer else None
    return summary


def score(model, root: Path, cases, store) -> dict:
    """Test box Dice / HD95 / NSD per class: ``{class name: {...}}`` and ``"all"`` (every row)."""
    from medseg.eval.evaluate import evaluate_case
    from medseg.eval.report import Report
    from medseg.infer import Predictor
    from medseg.train.embeddings import CachedPredictor, encoder_fingerprint

    # an unchanged encoder reads the cached embeddings; adapters, LoRA, conv branches and a tuned encoder run it
    cached = getattr(model, "peft", None) is None and encoder_fingerprint(model) == store.encoder
    predictor = CachedPredictor(model, store) if cached else Predictor(model, device="cpu")
    rows = [row for case in cases for row in evaluate_case(predictor, case)[0]]
    summary = Report(str(root), "test", "box", cases=rows).summary
    pick = lambda s: {k: (None if s[k] is None else round(s[k], 4)) for k in ("dice", "hd95", "nsd")}  # noqa: E731
    return {"all": pick(summary), **{c["class_name"]: pick(c) for c in summary["per_class"].values()}}


def run_set(name: str, root: Path, work: Path, budget: float, cache: Path, device: str, quick: bool,
            methods: list[str], zero_shot: dict | None = None) -> dict[str, dict]:
    """``{row name: {method: figures}}``: one row per dataset, or per class where a set has two (drishti).
    ``zero_shot``: the set's rows of an earlier run (``--merge``), whose zero-shot scores are kept."""
    from medseg.data.datasets import dataset_cases
    from medseg.models import build_model
    from medseg.train.embeddings import build_embeddings

    base = build_model("litemedsam", pretrained=True, weights="published").eval()
    splits = {s: dataset_cases(root, s) for s in ("train", "val", "test")}
    start = time.perf_counter()
    stores = {split: build_embeddings(base, cases, cache, label=f"{name}-{split}", progress=False)
              for split, cases in splits.items()}  # one cache for the runs (train, val) and the scoring (test)
    print(f"{name}: embeddings ready in {time.perf_counter() - start:.0f} s", flush=True)
    store = stores["test"]
    if zero_shot is not None:  # rows of an earlier run: its zero-shot scores, this run's methods added
        rows = {row: {"zero_shot": by["zero_shot"]} for row, by in zero_shot.items()}
        for method in methods:
            one = run_set_method(name, root, method, work, budget, cache, device, quick, store, splits["test"])
            for row, key in _row_keys(name, rows, one).items():
                rows[row][method] = {**one[key], **{k: v for k, v in one.items() if not isinstance(v, dict)}}
        return rows
    results = {"zero_shot": {**score(base, root, splits["test"], store), "trainable_params": 0, "epochs": 0}}
    print(f"{name}: zero_shot {results['zero_shot']['all']}", flush=True)
    for method in methods:
        results[method] = run_set_method(name, root, method, work, budget, cache, device, quick, store, splits["test"])
    rows: dict[str, dict] = {}
    for row, key in _row_keys(name, None, results["zero_shot"]).items():
        rows[row] = {method: {**r[key], **{k: v for k, v in r.items() if not isinstance(v, dict)}}
                     for method, r in results.items()}
    return rows


def _row_keys(name: str, rows: dict | None, scores: dict) -> dict[str, str]:
    """{row name: key of ``scores``}: the set itself ("all") when it has one class, else one row per class
    (``CLASS_NAMES``); with ``rows`` (an earlier run's), the names it has."""
    from medseg.eval.evaluate import EMPTY_NAME

    classes = [k for k, v in scores.items() if isinstance(v, dict) and k not in ("all", EMPTY_NAME)]
    named = CLASS_NAMES.get(name, {})
    keys = {name: "all"} if len(classes) == 1 else {f"{name}/{named.get(c, c)}": c for c in classes}
    if rows is not None and set(keys) != set(rows):
        raise RuntimeError(f"{name}: rows {sorted(keys)} differ from the earlier run's {sorted(rows)}")
    return keys


def run_set_method(name: str, root: Path, method: str, work: Path, budget: float, cache: Path, device: str,
                   quick: bool, store, test_cases) -> dict:
    """One method on one set: the budgeted training run, then its test scores (``score``) and run figures."""
    import torch

    from medseg.models import build_model

    run = train_in_child(name, root, method, work / f"{name}_{method}", budget, cache, device, quick)
    tuned = build_model("litemedsam", checkpoint=run["checkpoint"]).eval()
    torch.set_num_threads(THREADS)
    r = {**score(tuned, root, test_cases, store),
         **{k: run[k] for k in ("trainable_params", "peak_mb", "epochs", "steps", "seconds", "best_val_dice",
                                "best_epoch")}}
    shown = {k: "-" if r["all"][k] is None else f"{r['all'][k]:.4f}" for k in ("dice", "hd95", "nsd")}
    print(f"{name}: {method:<18} Dice {shown['dice']}  HD95 {shown['hd95']}  NSD {shown['nsd']}  "
          f"{r['trainable_params'] / 1e6:.2f} M trainable  {r['epochs']} epochs / {r['steps']} steps  "
          f"peak {r['peak_mb'] or 0:.0f} MB", flush=True)
    return r


def print_table(datasets: dict) -> None:
    def f(v, fmt="6.3f"):
        return "   -  " if v is None else format(v, fmt)

    print(f"\n{'set':<24}{'method':<19}{'Dice':>7}{'HD95':>8}{'NSD':>7}{'trainable':>11}{'peak MB':>9}{'epochs':>8}")
    for name, by_method in datasets.items():
        for i, (method, r) in enumerate(by_method.items()):
            print(f"{name if i == 0 else '':<24}{method:<19}{f(r['dice']):>7}{f(r['hd95'], '8.1f'):>8}"
                  f"{f(r['nsd']):>7}{r['trainable_params'] / 1e6:>10.2f}M{f(r.get('peak_mb'), '9.0f'):>9}"
                  f"{r['epochs']:>8}")


def targets(datasets: dict) -> dict:
    """The issue's targets, computed from the table (None where a row is missing)."""
    fine = [s for s in FINE_SETS if s in datasets]
    small = [m for m in METHODS if m not in ("decoder", "implicit", "whole")]
    wins = {}
    for m in small:
        beats = [s for s in fine if m in datasets[s] and "decoder" in datasets[s]
                 and datasets[s][m]["trainable_params"] <= 1.6e6
                 and datasets[s][m]["dice"] >= datasets[s]["decoder"]["dice"] + 0.03
                 and ("whole" not in datasets[s] or datasets[s][m]["dice"] >= datasets[s]["whole"]["dice"] - 0.01)]
        wins[m] = beats
    nsd = {s: {pair: (datasets[s][a]["nsd"], datasets[s][b]["nsd"])
               for pair, (a, b) in {"implicit_vs_decoder": ("implicit", "decoder"),
                                    "imedsam_vs_frequency_adapter": ("imedsam", "frequency_adapter")}.items()
               if a in datasets[s] and b in datasets[s]} for s in fine}
    worse = {s: [m for m, r in by.items() if r["dice"] < by["zero_shot"]["dice"] - 0.005] for s, by in datasets.items()}
    return {"beats_decoder_by_0.03_within_0.01_of_whole": wins, "nsd": nsd, "worse_than_zero_shot": worse}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_COUNTS} images, {QUICK_BUDGET_S} s per run")
    parser.add_argument("--json", type=Path, help="output JSON (default benchmarks/results/peft[_quick].json)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the shared data folder")
    parser.add_argument("--cache", type=Path, default=None, help="embedding cache (default ~/.cache/medseg/embeddings)")
    parser.add_argument("--sets", nargs="+", default=SETS, choices=SETS)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--budget", type=float, help=f"seconds per run (default {BUDGET_S}, --quick {QUICK_BUDGET_S})")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--merge", type=Path, help="add the sets run now to this earlier result file (same budget)")
    parser.add_argument("--child-overrides", help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_overrides:
        return child(args)
    require_data(args.data)
    set_threads()
    import torch

    cache = (args.cache or EMBEDDING_CACHE).expanduser().resolve()
    budget = args.budget or (QUICK_BUDGET_S if args.quick else BUDGET_S)
    out = args.json or REPO / "benchmarks" / "results" / f"peft{'_quick' if args.quick else ''}.json"
    start = time.time()
    result = {"datasets": {}, "quick": args.quick, "budget_s": budget, "threads": THREADS, "device": args.device,
              "torch": torch.__version__, "methods": {m: METHODS[m] for m in args.methods},
              "config": str(CONFIG.relative_to(REPO)), "sets_done": [],
              "notes": ["test box Dice / HD95 (px) / NSD (2 px) per row; checkpoints chosen by val Dice",
                        "budget_s: wall-clock seconds of each training run; embeddings cached before, outside it",
                        "peak_mb: peak resident memory of the training process (/usr/bin/time -v)"]}
    if args.merge is not None:  # add these sets to an earlier run's file (same budget and device)
        earlier = json.loads(args.merge.read_text())
        theirs, ours = (earlier["budget_s"], earlier["device"], earlier["quick"]), (budget, args.device, args.quick)
        if theirs != ours:
            sys.exit(f"--merge {args.merge}: its (budget, device, quick) {theirs} differ from this run's {ours}")
        result.update(datasets=earlier["datasets"], sets_done=earlier["sets_done"], notes=earlier["notes"])
    with tempfile.TemporaryDirectory(prefix="medseg_peft_") as tmp:
        work = Path(tmp)
        for name, root in set_roots(args.data, args.sets, work, QUICK_COUNTS if args.quick else None):
            earlier = {row: by for row, by in result["datasets"].items() if row.split("/")[0] == name}
            for row, by_method in run_set(name, root, work / "runs", budget, cache, args.device, args.quick,
                                          args.methods, earlier or None).items():
                result["datasets"].setdefault(row, {}).update(by_method)
            result["sets_done"] = sorted(set(result["sets_done"]) | {name})
            result.update(targets=targets(result["datasets"]), seconds=round(time.time() - start, 1))
            write_json(result, out)  # after every set: a stopped run keeps what it measured
    print_table(result["datasets"])
    print(json.dumps(result["targets"], indent=1))
    print(f"\nwrote {out} ({result['seconds']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
