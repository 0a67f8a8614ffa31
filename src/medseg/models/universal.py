"""Universal automatic segmentation: task and modality prior tokens, self-prompting, no user prompt.

A :class:`UniversalSegmenter` is a :class:`~medseg.models.sam.PromptableSegmenter` (its promptable
path, boxes and clicks, is the base model's, unchanged) with an :class:`AutomaticHead` that segments
every class of a known task with no prompt:

* **prior tokens** (Hermes): each class of each task owns ``tokens_per_class`` learned tokens; each
  modality owns a prompt token and a decoding query (ESP-MedSAM: one decoding query per modality).
  The class tokens (plus the modality token) enter the head's mask decoder as its sparse prompt, where
  the two-way transformer lets them and the image features attend to each other both ways; the
  modality's decoding query is added to the decoder's mask output token;
* **self-prompting** (ESP-MedSAM): a light head makes a coarse mask from the image embedding with a
  dynamic classifier (per-pixel features (C, E, E) dotted with weights generated from the class and
  modality tokens); the coarse logits enter the decoder as the dense (mask) prompt, through a learned
  gate that starts at zero (the dense prompt then equals the base model's "no mask" embedding);
* **start**: a new class's tokens are the base prompt encoder's embedding of a whole-image box, the
  modality's decoding query is zero, so an untrained task decodes as the base model would given that
  box (its salient object) and training starts from there;
* the head's mask decoder starts as a copy of the base model's (so it starts from LiteMedSAM's
  weights), without the high-resolution fusion head: it reads the image embedding only, so it trains
  from cached embeddings with either encoder.

The task table (task name -> modality, class ids and names, token keys) is stored as JSON bytes in
the ``automatic.task_table`` buffer, so a checkpoint says which tasks it knows
(:func:`build_model` reads it before loading the tensors: :meth:`AutomaticHead.adopt_state`).
Tasks are added with :meth:`AutomaticHead.add_task`; a new task gets new tokens and old tokens can
be frozen (:meth:`AutomaticHead.freeze_tasks`), which is how a task is added without forgetting.
A task added with ``rank > 0`` also owns a low-rank update of the head's decoder
(:class:`~medseg.models.lowrank.LowRankUpdates`, active only for that task's queries): a task that the
shared decoder cannot serve through tokens alone is learnt by its own update, while every other task
still runs the unchanged decoder, so old tasks' outputs stay bit-identical.
"""

from __future__ import annotations

import copy
import json
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from .common import MLP, LayerNorm2d
from .lowrank import LowRankUpdates
from .mask_decoder import MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import PromptableSegmenter


@dataclass(frozen=True)
class TaskInfo:
    """One task the automatic head knows: a dataset/target with its modality and classes.

    ``classes``: label id -> class name (background excluded), in output order; ``key``: the name of
    its token parameter (``t0``, ``t1``, ... in the order tasks were added); ``window``: the intensity
    window its images were normalised with ("CT", "MR" or None), so inference does the same; ``rank``:
    the rank of its own low-rank update of the head's decoder (0: none, it uses the shared decoder)."""

    name: str
    modality: str
    classes: dict[int, str]
    key: str
    window: str | None = None
    rank: int = 0

    def to_dict(self) -> dict:
        data = {**asdict(self), "classes": {str(k): v for k, v in self.classes.items()}}
        if not self.rank:  # tables written before low-rank updates existed stay byte-identical
            del data["rank"]
        return data

    @classmethod
    def from_dict(cls, data: dict) -> "TaskInfo":
        return cls(str(data["name"]), str(data["modality"]), {int(k): str(v) for k, v in data["classes"].items()},
                   str(data["key"]), data.get("window"), int(data.get("rank", 0)))


def _modality_key(modality: str) -> str:
    """Parameter name of a modality (ParameterDict keys may not hold dots)."""
    return "m_" + "".join(c if c.isalnum() else "_" for c in modality.lower())


class AutomaticHead(nn.Module):
    """Prompt-free decoding of every class of a task from an image embedding.

    forward(embedding (B, C, E, E), image_pe (1, C, E, E), tasks: list of B task names)
    -> (logits (N, 1, 4E, 4E), coarse logits (N, 1, E, E), query index (N, 2) of (item b, class k)),
    one query per class of each item's task, items in order, classes in the task's order.
    """

    def __init__(self, mask_decoder: MaskDecoder, prompt_encoder: PromptEncoder, tokens_per_class: int = 2,
                 coarse_dim: int = 32) -> None:
        super().__init__()
        dim = mask_decoder.iou_token.weight.shape[1]
        self.dim, self.tokens_per_class = dim, tokens_per_class
        self.decoder = copy.deepcopy(mask_decoder)
        self.decoder.fusion = None  # reads the embedding only: trains from cached embeddings
        self.task_updates = LowRankUpdates(self.decoder)  # per-task low-rank updates (tasks added with rank > 0)
        self.mask_downscaling = copy.deepcopy(prompt_encoder.mask_downscaling)
        self.no_mask_embed = copy.deepcopy(prompt_encoder.no_mask_embed)
        self.self_prompt_gate = nn.Parameter(torch.zeros(1))  # dense prompt = no-mask + gate * coarse mask
        # a new class's tokens start as the prompt encoder's embedding of a whole-image box (two corner
        # tokens), so an untrained task decodes like the base model given that box: the salient object
        size = prompt_encoder.input_size[0]
        with torch.no_grad():
            whole, _ = prompt_encoder(points=None, boxes=torch.tensor([[0.0, 0.0, size - 1.0, size - 1.0]]), masks=None)
        self.register_buffer("whole_image_box", whole[0].repeat(-(-tokens_per_class // 2), 1)[:tokens_per_class],
                             persistent=False)
        self.coarse_features = nn.Sequential(nn.Conv2d(dim, 2 * coarse_dim, 3, padding=1), LayerNorm2d(2 * coarse_dim),
                                             nn.GELU(), nn.Conv2d(2 * coarse_dim, coarse_dim, 1))
        self.coarse_classifier = MLP(dim, dim, coarse_dim + 1, 2)
        self.class_tokens = nn.ParameterDict()     # task key -> (K, T, C)
        self.modality_tokens = nn.ParameterDict()  # modality key -> (2, C): prompt token, decoding query
        self.register_buffer("task_table", torch.zeros(0, dtype=torch.uint8))
        self.tasks: dict[str, TaskInfo] = {}

    # ---- the task table -------------------------------------------------------------------------
    def _write_table(self) -> None:
        data = json.dumps([t.to_dict() for t in self.tasks.values()]).encode("utf-8")
        self.task_table = torch.frombuffer(bytearray(data), dtype=torch.uint8).clone().to(self.task_table.device)

    def add_task(self, name: str, modality: str, classes: dict[int, str], window: str | None = None,
                 rank: int = 0) -> TaskInfo:
        """New tokens for a task (and for its modality if new); returns its TaskInfo. ``window``: the
        intensity window ("CT", "MR" or None) its images are normalised with; ``rank`` > 0: the task
        also gets its own low-rank update of the decoder (zero at first).

        Raises InputError for a known task name, no classes, a background (0) class or a negative rank."""
        if name in self.tasks:
            raise InputError(f"task {name!r} is already known to this model")
        classes = {int(k): str(v) for k, v in classes.items()}
        if not classes or 0 in classes:
            raise InputError(f"task {name!r}: needs classes with ids > 0 (0 is background), got {classes}")
        if int(rank) < 0:
            raise InputError(f"task {name!r}: a low-rank update's rank must be >= 0, got {rank}")
        modality = str(modality or "unknown")
        device = self.coarse_classifier.layers[0].weight.device
        task = TaskInfo(name, modality, classes, f"t{len(self.tasks)}", window, int(rank))
        if task.rank:
            self.task_updates.add(task.key, task.rank, device)
        start = self.whole_image_box.to(device)[None].repeat(len(classes), 1, 1)
        self.class_tokens[task.key] = nn.Parameter(start + 0.02 * torch.randn_like(start))
        mkey = _modality_key(modality)
        if mkey not in self.modality_tokens:  # prompt token small, decoding query zero: starts as the base decoder
            self.modality_tokens[mkey] = nn.Parameter(torch.cat([0.02 * torch.randn(1, self.dim, device=device),
                                                                 torch.zeros(1, self.dim, device=device)]))
        self.tasks[name] = task
        self._write_table()
        return task

    def adopt_state(self, state: dict[str, torch.Tensor], prefix: str = "automatic.") -> None:
        """Recreate the tasks recorded in ``state[prefix + "task_table"]`` (before a strict load)."""
        table = state.get(prefix + "task_table")
        if table is None:
            return
        try:
            entries = json.loads(bytes(table.to(torch.uint8).tolist()).decode("utf-8")) if table.numel() else []
            infos = [TaskInfo.from_dict(e) for e in entries]
        except (ValueError, KeyError, TypeError) as exc:
            raise InputError(f"the checkpoint's task table is unreadable ({exc})") from None
        self.tasks, self.class_tokens, self.modality_tokens = {}, nn.ParameterDict(), nn.ParameterDict()
        self.task_updates.clear()
        for info in infos:
            added = self.add_task(info.name, info.modality, info.classes, info.window, info.rank)
            if added.key != info.key:
                raise InputError(f"the checkpoint's task table is inconsistent at task {info.name!r}")

    def freeze_tasks(self, names: list[str] | None = None) -> int:
        """Stop gradients into the tokens of ``names`` (default: all known tasks), their modalities and
        their low-rank updates; returns the number of frozen parameters. New tasks' stay trainable."""
        names = list(self.tasks) if names is None else names
        count = 0
        for name in names:
            task = self.task(name)
            update = list(self.task_updates.sets[task.key].values()) if task.rank else []
            for p in (self.class_tokens[task.key], self.modality_tokens[_modality_key(task.modality)], *update):
                if p.requires_grad:
                    count += p.numel()
                p.requires_grad_(False)
        return count

    def task(self, name: str) -> TaskInfo:
        if name not in self.tasks:
            known = ", ".join(self.tasks) or "none"
            raise InputError(f"unknown task {name!r}; this model knows: {known} (`medseg tasks` lists them)")
        return self.tasks[name]

    # ---- decoding -------------------------------------------------------------------------------
    def queries(self, tasks: list[str]) -> torch.Tensor:
        """(N, 2) long: (item index, class index within its task) of every query, in output order."""
        pairs = [(b, k) for b, name in enumerate(tasks) for k in range(len(self.task(name).classes))]
        return torch.tensor(pairs, dtype=torch.long).reshape(-1, 2)

    def forward(self, embedding: torch.Tensor, image_pe: torch.Tensor, tasks: list[str],
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if embedding.shape[0] != len(tasks):
            raise ValueError(f"{embedding.shape[0]} embeddings but {len(tasks)} task names")
        index = self.queries(tasks)
        cls = torch.cat([self.class_tokens[self.task(n).key] for n in tasks])           # (N, T, C)
        mod = torch.stack([self.modality_tokens[_modality_key(self.task(n).modality)] for n in tasks])  # (B, 2, C)
        mod = mod[index[:, 0]]                                                           # (N, 2, C)
        image = embedding[index[:, 0].to(embedding.device)]                              # (N, C, E, E)
        # self-prompt: a dynamic classifier on light per-pixel features -> coarse logits (N, 1, E, E)
        weights = self.coarse_classifier(cls.mean(1) + mod[:, 0])                       # (N, c + 1)
        feats = self.coarse_features(embedding)[index[:, 0].to(embedding.device)]        # (N, c, E, E)
        coarse = torch.einsum("nchw,nc->nhw", feats, weights[:, :-1])[:, None] + weights[:, -1, None, None, None]
        size = 4 * embedding.shape[-1]
        dense = self.mask_downscaling(F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False))
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1) + self.self_prompt_gate * dense
        sparse = torch.cat([cls + mod[:, :1], mod[:, :1]], dim=1)                        # (N, T + 1, C)
        return self._decode(tasks, index, image, image_pe, sparse, dense, mod[:, 1]), coarse, index

    def _decode(self, tasks: list[str], index: torch.Tensor, image: torch.Tensor, image_pe: torch.Tensor,
                sparse: torch.Tensor, dense: torch.Tensor, query: torch.Tensor) -> torch.Tensor:
        """The decoder over the N queries -> logits (N, 1, 4E, 4E): queries of tasks with a low-rank update
        run under it, all others (in one group) under the shared decoder alone."""
        own = {name: info.key if info.rank else None for name, info in self.tasks.items()}
        keys = [own[tasks[b]] for b in index[:, 0].tolist()]
        if not any(keys):
            return self.decoder(image, image_pe, sparse, dense, multimask=False, query=query)[0]
        parts, order = [], []
        for key in dict.fromkeys(keys):
            rows = torch.tensor([n for n, k in enumerate(keys) if k == key], device=image.device)
            with self.task_updates.using(key):
                parts.append(self.decoder(image[rows], image_pe, sparse[rows], dense[rows], multimask=False,
                                          query=query[rows])[0])
            order.append(rows)
        logits = torch.cat(parts)
        return logits[torch.argsort(torch.cat(order))]


class UniversalSegmenter(PromptableSegmenter):
    """A promptable model plus an :class:`AutomaticHead` (``automatic``): prompts or no prompt.

    ``segment(embedding (B, C, E, E), tasks)`` -> logits (N, 1, S, S), coarse (N, 1, E, E), query index
    (N, 2); ``forward`` and ``decode`` are the promptable model's.
    """

    def __init__(self, image_encoder: nn.Module, prompt_encoder: PromptEncoder, mask_decoder: MaskDecoder,
                 image_size: int, tokens_per_class: int = 2) -> None:
        super().__init__(image_encoder, prompt_encoder, mask_decoder, image_size)
        self.automatic = AutomaticHead(mask_decoder, prompt_encoder, tokens_per_class)

    @classmethod
    def from_promptable(cls, base: PromptableSegmenter, tokens_per_class: int = 2) -> "UniversalSegmenter":
        """Wrap a built (possibly pretrained) promptable model; the head's decoder copies its decoder."""
        return cls(base.image_encoder, base.prompt_encoder, base.mask_decoder, base.image_size, tokens_per_class)

    @property
    def tasks(self) -> dict[str, TaskInfo]:
        return self.automatic.tasks

    def adopt_state(self, state: dict[str, torch.Tensor]) -> None:
        super().adopt_state(state)
        self.automatic.adopt_state(state)

    def segment(self, embedding: torch.Tensor, tasks: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits, coarse, index = self.automatic(embedding, self.prompt_encoder.get_dense_pe(), tasks)
        if logits.shape[-1] != self.image_size:
            logits = F.interpolate(logits, size=(self.image_size, self.image_size), mode="bilinear",
                                   align_corners=False)
        return logits, coarse, index


def label_map(logits: torch.Tensor, class_ids: list[int]) -> torch.Tensor:
    """Per-class logits (K, H, W) of one image -> label map (H, W) int64: the id of the class with the
    highest logit where that logit is > 0, else 0 (background)."""
    if logits.shape[0] != len(class_ids):
        raise ValueError(f"{logits.shape[0]} logit maps for {len(class_ids)} classes")
    best, which = logits.max(0)
    ids = torch.tensor(class_ids, dtype=torch.long, device=logits.device)
    return torch.where(best > 0, ids[which], torch.zeros_like(which))
