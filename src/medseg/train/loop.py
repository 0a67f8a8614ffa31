"""The one training loop: every objective, one process or many (torchrun), fresh or resumed.

    from medseg.train import load_config, train
    result = train(load_config("configs/tiny_smoke.yaml", ["data.root=data/kvasir_seg"]), "runs/smoke")
    result["best_dice"], result["history"][-1]

Order of a run: check the run folder -> seed -> build the model -> datasets -> freeze -> optimizer,
schedule, AMP -> (resume) -> epochs of [train steps, validation, checkpoints, logs]. Everything that
can be wrong with the input fails before the first step.
"""

from __future__ import annotations

import contextlib
import dataclasses
import random
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader
from tqdm import tqdm

from medseg.errors import InputError
from medseg.models import build_model, list_models
from medseg.models.implicit import add_implicit_decoder
from medseg.models.peft import PEFT_KINDS, add_peft
from medseg.train import ddp
from medseg.train.checkpoint import SUFFIXES, has_checkpoint, load_checkpoint, read_meta, save_checkpoint
from medseg.train.config import Config, config_to_dict, save_config
from medseg.train.datasets import EpochSampler
from medseg.train.logs import ARTIFACTS, RunLog
from medseg.train.embeddings import cache_dir_of
from medseg.train.objectives import RunContext, make_objective
# objectives that live in their own modules register themselves on import
from medseg.train import cached as _cached, distill as _distill, mae as _mae, prompt3d as _prompt3d, unet as _unet, universal as _universal, volume as _volume  # noqa: E402,F401,E501
from medseg.train.optim import (TrainForward, amp_dtype, enable_activation_checkpointing, lr_schedule, make_optimizer,
                                make_scheduler, select_trainable)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def check_run_dir(run_dir: Path, resume: bool, overwrite: bool) -> None:
    """A non-empty run folder is only reused with ``resume`` (needs ``latest.*``) or ``overwrite``."""
    if resume and overwrite:
        raise InputError("give either resume or overwrite, not both")
    if resume:
        if not has_checkpoint(run_dir, "latest"):
            raise InputError(f"nothing to resume in {run_dir}: it has no latest.safetensors/.json/.pt")
    elif run_dir.exists() and (not run_dir.is_dir() or any(run_dir.iterdir())) and not overwrite:
        raise InputError(f"run folder {run_dir} exists and is not empty: resume it (--resume {run_dir}), "
                         f"start again in it (--overwrite) or choose another --run-dir")


def _clear_run_dir(run_dir: Path) -> None:
    """Remove what an earlier run wrote there (and nothing else)."""
    for name in [f"{t}{s}" for t in ("latest", "best") for s in SUFFIXES] + list(ARTIFACTS):
        (run_dir / name).unlink(missing_ok=True)
    shutil.rmtree(run_dir / "tensorboard", ignore_errors=True)


def _build(config: Config) -> tuple[torch.nn.Module, Config]:
    """The model of ``config.model`` and the config with ``data.image_size`` resolved from it."""
    m = config.model
    if m.name not in list_models():
        raise InputError(f"config key 'model.name': unknown model {m.name!r}; available: {', '.join(list_models())}")
    model = build_model(m.name, pretrained=m.pretrained and m.checkpoint is None, checkpoint=m.checkpoint,
                        weights=m.weights)
    if m.init_encoder is not None:
        from medseg.models.build import load_encoder_weights

        load_encoder_weights(model, m.init_encoder)
    if m.trainable in PEFT_KINDS and getattr(model, "peft", None) is None:  # a checkpoint may hold it already
        if not hasattr(model, "peft"):  # a promptable model's slot for encoder fine-tuning
            raise InputError(f"config key 'model.trainable': {m.trainable!r} fine-tunes a promptable model's image "
                             f"encoder, and {m.name!r} has none")
        add_peft(model, m.trainable, m.lora_rank)
    if m.decoder == "implicit" and not getattr(model, "has_implicit_decoder", False):
        if not hasattr(model, "has_implicit_decoder"):
            raise InputError(f"config key 'model.decoder': 'implicit' refines a promptable model's mask decoder, "
                             f"and {m.name!r} has none")
        add_implicit_decoder(model)
    size = config.data.image_size
    if size is not None and size != model.image_size:
        raise InputError(f"config key 'data.image_size' is {size}, but model {m.name!r} takes "
                         f"{model.image_size}x{model.image_size}; leave it unset")
    data = dataclasses.replace(config.data, image_size=model.image_size)
    return model, dataclasses.replace(config, data=data)


def _loaders(config: Config, train_ds, val_ds, info: ddp.DistInfo, device: torch.device):
    """Train loader (this process's share of each global batch) and val loader (main process only)."""
    t = config.train
    group = t.batch_size * config.optim.accumulate
    if t.batch_size % info.world_size:
        raise InputError(f"train.batch_size {t.batch_size} is not divisible by the {info.world_size} processes")
    if len(train_ds) < group:
        raise InputError(f"the train split has {len(train_ds)} objects, fewer than one optimizer step "
                         f"(train.batch_size {t.batch_size} x optim.accumulate {config.optim.accumulate})")
    sampler = EpochSampler(len(train_ds), group, t.seed, info.rank, info.world_size, max_batches=t.steps_per_epoch)
    common = {"num_workers": config.data.num_workers, "pin_memory": device.type == "cuda"}
    train_loader = DataLoader(train_ds, t.batch_size // info.world_size, sampler=sampler, drop_last=True, **common)
    val_loader = DataLoader(val_ds, t.batch_size, shuffle=False, **common) if val_ds is not None else None
    return train_loader, val_loader


def _to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def _mean_over_processes(value: torch.Tensor, info: ddp.DistInfo) -> float:
    if info.enabled:
        value = value.clone()
        dist.all_reduce(value)  # SUM (gloo has no AVG)
        value /= info.world_size
    return float(value)


def _say(info: ddp.DistInfo, message: str) -> None:
    if info.is_main:
        tqdm.write(message, file=sys.stdout)


def train(config: Config, run_dir: str | Path | None = None, resume: bool = False, overwrite: bool = False,
          stop_after: int | None = None) -> dict:
    """Train ``config`` into ``run_dir`` (default ``config.train.run_dir``).

    Args:
        resume: continue from ``run_dir/latest.*`` with the same weights, optimizer, LR schedule,
            RNG and data order, so the step losses equal those of an uninterrupted run.
        overwrite: start again in a non-empty run folder (only files a run writes are removed).
        stop_after: stop after this many completed epochs, as if interrupted (tests, time-boxed jobs).

    Returns:
        ``{"history": [{epoch, step, train_loss, val_dice, lr, seconds}], "steps": [{step, epoch,
        loss, lr}], "best_dice": float | None, "run_dir": str}``, including earlier epochs of a
        resumed run (on the main process).
    """
    run_dir = run_dir if run_dir is not None else config.train.run_dir
    if run_dir is None:
        raise InputError("no run folder: pass run_dir (--run-dir DIR) or set train.run_dir")
    run_dir = Path(run_dir)
    info, device = ddp.setup(config.train.device)
    try:
        check_run_dir(run_dir, resume, overwrite)
        ddp.barrier(info)  # every process has looked before the main one writes there
        return _train(config, run_dir, resume, overwrite, stop_after, info, device)
    finally:
        ddp.cleanup(info)


def _prepare(config: Config, run_dir: Path, resume: bool, overwrite: bool, info, device) -> dict:
    """Everything before the first step; returns the pieces the epochs use."""
    seed_everything(config.train.seed)
    model, config = _build(config)
    objective = make_objective(config)
    objective.prepare_model(model)  # e.g. distillation: the student takes the teacher's decoder
    model.to(device)  # before datasets (cached embeddings) and the optimizer (a resumed state lands here too)
    run = RunContext(model=model, device=device, dist=info, cache_dir=cache_dir_of(config.train.cache_dir),
                     progress=config.train.progress and info.is_main)
    train_ds, val_ds = objective.make_datasets(run)
    train_loader, val_loader = _loaders(config, train_ds, val_ds, info, device)
    select_trainable(model, config.model.trainable)
    objective.restrict_trainable(model)  # e.g. a universal model keeps its old tasks' tokens fixed
    n_train, n_total = (sum(q.numel() for q in model.parameters() if q.requires_grad or every)
                        for every in (False, True))
    if config.model.activation_checkpointing and not enable_activation_checkpointing(model):
        _say(info, f"note: model {config.model.name!r} has no activation checkpointing; ignored")
    optimizer = make_optimizer(model, config.optim)
    if resume and config.train.time_budget_s is not None:  # a budgeted run resumes with the epochs it planned
        planned = read_meta(run_dir, "latest").get("config", {}).get("train", {}).get("epochs", config.train.epochs)
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=int(planned)))
    steps_per_epoch = len(train_loader) // config.optim.accumulate
    scheduler = make_scheduler(optimizer, config.optim, steps_per_epoch * config.train.epochs)
    dtype = amp_dtype(config.train.amp, device)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    state = {"epoch": 0, "step": 0, "best_dice": None}
    if resume:
        meta = load_checkpoint(run_dir, "latest", model, config.model.name, optimizer, scheduler, scaler)
        state = {k: meta[k] for k in state}
    _say(info, f"{config.model.name}: {n_train:,} of {n_total:,} parameters train ({config.model.trainable}); "
               f"{len(train_ds)} train objects, {len(val_ds) if val_ds else 0} val; {steps_per_epoch} steps/epoch; "
               f"{info.world_size} process(es) on {device}; amp {str(dtype).replace('torch.', '') if dtype else 'off'}")
    if info.is_main:
        if overwrite:
            _clear_run_dir(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")  # the resolved config (rewritten on resume)
    ddp.barrier(info)
    forward = ddp.wrap(TrainForward(model), info, device)
    return dict(config=config, model=model, forward=forward, objective=objective, optimizer=optimizer,
                scheduler=scheduler, scaler=scaler, dtype=dtype, train_loader=train_loader,
                val_loader=val_loader, state=state, steps_per_epoch=steps_per_epoch)


def _train_epoch(p: dict, epoch: int, info: ddp.DistInfo, device: torch.device, log: RunLog) -> float:
    """One epoch of optimizer steps; returns the mean step loss (over all processes)."""
    config, forward, optimizer, scaler = p["config"], p["forward"], p["optimizer"], p["scaler"]
    accumulate, clip = config.optim.accumulate, config.optim.grad_clip
    loader = p["train_loader"]
    loader.sampler.set_epoch(epoch)
    loader.dataset.set_epoch(epoch)
    forward.train()
    params = [q for q in p["model"].parameters() if q.requires_grad]
    bar = tqdm(loader, desc=f"epoch {epoch + 1}/{config.train.epochs}", unit="batch", leave=False,
               disable=not (info.is_main and config.train.progress), dynamic_ncols=True)
    running, losses = torch.zeros((), device=device), []
    for i, batch in enumerate(bar):
        batch = _to_device(batch, device)
        last = (i + 1) % accumulate == 0
        sync = forward.no_sync() if info.enabled and not last else contextlib.nullcontext()
        with sync:
            with torch.autocast(device.type, dtype=p["dtype"], enabled=p["dtype"] is not None):
                loss, parts = p["objective"].loss(forward, batch)
            scaler.scale(loss / accumulate).backward()
        running += loss.detach() / accumulate
        if not last:
            continue
        if clip:
            scaler.unscale_(optimizer)
            torch.nn.utils.clip_grad_norm_(params, clip)
        lr = optimizer.param_groups[0]["lr"]
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad(set_to_none=True)
        p["scheduler"].step()
        p["state"]["step"] += 1
        step_loss = _mean_over_processes(running, info)
        running.zero_()
        losses.append(step_loss)
        step = p["state"]["step"]
        show = step % config.train.log_every == 0
        log.step(step, epoch + 1, step_loss, lr, {k: float(v) for k, v in parts.items()} if show else {}, show)
        if show:
            bar.set_postfix(loss=f"{step_loss:.4f}", lr=f"{lr:.2e}")
    return float(np.mean(losses))


def _validate(p: dict, info: ddp.DistInfo, device: torch.device) -> float | None:
    """Validation Dice computed on the main process, shared with the others."""
    dice = None
    if info.is_main and p["val_loader"] is not None:
        model = p["model"].eval()
        with torch.autocast(device.type, dtype=p["dtype"], enabled=p["dtype"] is not None):
            metrics = p["objective"].validate(model, p["val_loader"])
        dice = metrics["dice"]
        extra = {k: v for k, v in metrics.items() if k != "dice"}  # per task, per round: said, not checkpointed
        if extra:
            _say(info, "val " + "  ".join(f"{k} {v:.4f}" for k, v in extra.items()))
    return ddp.broadcast(dice, info)


def _save(p: dict, run_dir: Path, row: dict, improved: bool, info: ddp.DistInfo) -> None:
    ddp.barrier(info)
    if info.is_main:
        config = p["config"]
        kwargs = dict(model_name=config.model.name, config=config_to_dict(config), epoch=row["epoch"],
                      step=row["step"], metrics=row, best_dice=p["state"]["best_dice"], optimizer=p["optimizer"],
                      scheduler=p["scheduler"], scaler=p["scaler"])
        save_checkpoint(run_dir, ("latest", "best") if improved else "latest", p["model"], **kwargs)
    ddp.barrier(info)


def _validate_start(p: dict, run_dir: Path, info: ddp.DistInfo, device: torch.device, log: RunLog) -> None:
    """Epoch 0: score the starting weights, so that "best" is never worse on val than where training began
    (fine-tuning a pretrained model can only keep or improve its val Dice)."""
    start = time.perf_counter()
    dice = _validate(p, info, device)
    p["state"]["best_dice"] = dice
    row = {"epoch": 0, "step": 0, "train_loss": None, "val_dice": dice, "lr": None,
           "seconds": round(time.perf_counter() - start, 3)}
    log.epoch(row)
    _save(p, run_dir, row, dice is not None, info)
    _say(info, f"epoch 0 (starting weights)  val dice {'-' if dice is None else f'{dice:.4f}'}  {row['seconds']:.1f} s")


def _fit_budget(p: dict, run_dir: Path, spent: float, epoch_seconds: float, info: ddp.DistInfo) -> int:
    """After epoch 1 of a run with ``train.time_budget_s``: the epochs that fit the budget (each
    estimated at 1.05 x the first, plus 0.5 s), at most ``train.epochs``; the LR schedule is
    re-planned to end there and the run's config records it. Returns the new number of epochs."""
    config = p["config"]
    more = int((config.train.time_budget_s - spent) // (epoch_seconds * 1.05 + 0.5))
    epochs = ddp.broadcast(max(1, min(config.train.epochs, 1 + more)), info)  # rank 0's clock decides
    config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))
    schedule = lr_schedule(config.optim, p["steps_per_epoch"] * epochs)  # from the next step on
    p["scheduler"].lr_lambdas = [schedule] * len(p["scheduler"].base_lrs)  # one per parameter group
    p["config"] = config
    if info.is_main:
        save_config(config, run_dir / "config.yaml")
    _say(info, f"time budget {config.train.time_budget_s:.0f} s: {epochs} epoch(s) fit "
               f"({spent:.0f} s spent, about {epoch_seconds:.0f} s each)")
    return epochs


def _train(config: Config, run_dir: Path, resume: bool, overwrite: bool, stop_after: int | None,
           info: ddp.DistInfo, device: torch.device) -> dict:
    began = time.perf_counter()
    p = _prepare(config, run_dir, resume, overwrite, info, device)
    config, state = p["config"], p["state"]
    log = RunLog(run_dir, info.is_main, state["epoch"], state["step"])
    epochs = config.train.epochs if stop_after is None else min(config.train.epochs, stop_after)
    try:
        if state["epoch"] == 0 and not resume and config.train.validate_start and p["val_loader"] is not None:
            _validate_start(p, run_dir, info, device, log)
        for epoch in range(state["epoch"], epochs):
            p["objective"].set_epoch(epoch)  # objectives that draw prompts per step (click rounds)
            start = time.perf_counter()
            train_loss = _train_epoch(p, epoch, info, device, log)
            last = epoch + 1 == config.train.epochs
            dice = _validate(p, info, device) if (epoch + 1) % config.train.val_every == 0 or last else None
            if epoch == 0 and config.train.time_budget_s is not None:
                planned = _fit_budget(p, run_dir, time.perf_counter() - began, time.perf_counter() - start, info)
                config, epochs = p["config"], min(epochs, planned)
                if planned == 1 and dice is None:  # the first epoch turned out to be the last
                    dice = _validate(p, info, device)
            improved = dice is not None and (state["best_dice"] is None or dice > state["best_dice"])
            if improved:
                state["best_dice"] = dice
            state["epoch"] = epoch + 1
            lr = log.steps[-1]["lr"]  # of the epoch's last step
            row = {"epoch": epoch + 1, "step": state["step"], "train_loss": train_loss, "val_dice": dice,
                   "lr": lr, "seconds": round(time.perf_counter() - start, 3)}
            log.epoch(row)  # before the checkpoint: rows past it are dropped on resume, none go missing
            _save(p, run_dir, row, improved, info)
            shown = "-" if dice is None else f"{dice:.4f}"
            _say(info, f"epoch {epoch + 1}/{config.train.epochs}  step {state['step']}  loss {train_loss:.4f}  "
                       f"val dice {shown}{'  (best)' if improved else ''}  lr {lr:.2e}  {row['seconds']:.1f} s")
            if epoch + 1 >= epochs:  # the budget may have shortened the run
                break
    finally:
        log.close()
    return {"history": log.epochs, "steps": log.steps, "best_dice": state["best_dice"], "run_dir": str(run_dir)}


def run_summary(result: dict, seconds: float | None = None) -> dict:
    """The figures a report of a run gives, from :func:`train`'s result: ``{"epochs" (trained, epoch 0
    not counted), "steps", "seconds" (if given), "best_val_dice", "best_epoch", "first_loss",
    "last_loss", "checkpoint"}`` (``best.safetensors``, or ``latest`` when nothing was validated)."""
    history, steps = result["history"], result["steps"]
    best = max(history, key=lambda h: -1 if h["val_dice"] is None else h["val_dice"]) if history else None
    run_dir = Path(result["run_dir"])
    checkpoint = run_dir / ("best.safetensors" if result["best_dice"] is not None else "latest.safetensors")
    summary = {"epochs": sum(1 for h in history if h["epoch"] > 0), "steps": len(steps),
               "best_val_dice": result["best_dice"], "best_epoch": best["epoch"] if best else None,
               "first_loss": steps[0]["loss"] if steps else None, "last_loss": steps[-1]["loss"] if steps else None,
               "checkpoint": checkpoint}
    if seconds is not None:
        summary["seconds"] = round(seconds, 1)
    return summary
