"""One builder per model variant, and the registry that names them.

``build_model("litemedsam", pretrained=True)`` returns the LiteMedSAM model with its published
weights; ``list_models()`` names every variant. Each public builder passes only the numbers that
differ to ``_build_tinyvit_sam``, which spells out every part.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from ..errors import CheckpointError, InputError
from .hrencoder import HREncoder
from .mask_decoder import FeatureFusion, MaskDecoder
from .prompt_encoder import PromptEncoder
from .sam import PromptableSegmenter
from .tinyvit import TinyViT
from .transformer import TwoWayTransformer
from .weights import litemedsam_weights_path, load_state_dict, read_provenance


def _build_tinyvit_sam(image_size: int, embed_dims: tuple[int, ...], depths: tuple[int, ...],
                       num_heads: tuple[int, ...], window_sizes: tuple[int, ...], decoder_mlp_dim: int,
                       ) -> PromptableSegmenter:
    embed_dim = 256
    return PromptableSegmenter(
        image_encoder=TinyViT(img_size=image_size, embed_dims=embed_dims, depths=depths, num_heads=num_heads,
                              window_sizes=window_sizes, strides=(2, 2, 1), out_chans=embed_dim),
        prompt_encoder=PromptEncoder(embed_dim=embed_dim, embedding_size=image_size // 4, input_size=image_size,
                                     mask_in_chans=16),
        mask_decoder=MaskDecoder(
            transformer=TwoWayTransformer(depth=2, dim=embed_dim, num_heads=8, mlp_dim=decoder_mlp_dim),
            dim=embed_dim, num_multimask=3, iou_head_depth=3, iou_head_hidden=256),
        image_size=image_size,
    )


def build_litemedsam() -> PromptableSegmenter:
    """LiteMedSAM: TinyViT-5M encoder at 256x256 -> 256x64x64, SAM prompt encoder and mask decoder."""
    return _build_tinyvit_sam(256, (64, 128, 160, 320), (2, 2, 6, 2), (2, 4, 5, 10), (7, 7, 14, 7), 2048)


def build_litemedsam_tiny() -> PromptableSegmenter:
    """A tiny random variant at 64x64 for tests and smoke runs (no pretrained weights)."""
    return _build_tinyvit_sam(64, (16, 32, 32, 64), (1, 1, 1, 1), (1, 2, 2, 4), (4, 4, 4, 4), 128)


def _build_hr_sam(encoder: HREncoder, decoder_mlp_dim: int = 2048) -> PromptableSegmenter:
    """The high-resolution encoder with LiteMedSAM's prompt encoder and mask decoder (same shapes, so the
    teacher's weights load into them) and a zero-initialised stride-4/8 fusion head; input 1024x1024."""
    embed_dim, size = 256, encoder.img_size
    decoder = MaskDecoder(transformer=TwoWayTransformer(depth=2, dim=embed_dim, num_heads=8, mlp_dim=decoder_mlp_dim),
                          dim=embed_dim, num_multimask=3, iou_head_depth=3, iou_head_hidden=256)
    decoder.fusion = FeatureFusion(c4=encoder.dims[0], c8=encoder.dims[1], dim=embed_dim)
    return PromptableSegmenter(
        image_encoder=encoder,
        prompt_encoder=PromptEncoder(embed_dim=embed_dim, embedding_size=size // 16, input_size=size, mask_in_chans=16),
        mask_decoder=decoder, image_size=size)


HR_ENCODERS: dict[str, Callable[[], HREncoder]] = {
    # gated-linear-attention encoder (3.3 M parameters, ~20 GFLOPs at 1024) -> 256x64x64
    "hr-small": lambda: HREncoder(1024, dims=(32, 64, 160, 256), depths=(2, 2, 4, 2), num_heads=(5, 8)),
    # a thinner, shallower encoder (1.4 M parameters, ~10 GFLOPs at 1024) -> 256x64x64
    "hr-tiny": lambda: HREncoder(1024, dims=(24, 48, 128, 192), depths=(1, 2, 3, 1), num_heads=(4, 6)),
    # a tiny random one at 256x256 for tests (embedding 256x16x16)
    "hr-test": lambda: HREncoder(256, dims=(8, 16, 32, 32), depths=(1, 1, 1, 1), num_heads=(1, 1),
                                 expand=(1.0, 1.0), mlp_ratio=1.0),
}


def build_hr_small() -> PromptableSegmenter:
    """HR-small: gated-linear-attention encoder (3.3 M parameters, ~20 GFLOPs at 1024) -> 256x64x64."""
    return _build_hr_sam(HR_ENCODERS["hr-small"]())


def build_hr_tiny() -> PromptableSegmenter:
    """HR-tiny: a thinner, shallower encoder (1.4 M parameters, ~10 GFLOPs at 1024) -> 256x64x64."""
    return _build_hr_sam(HR_ENCODERS["hr-tiny"]())


def build_hr_test() -> PromptableSegmenter:
    """A tiny random HR model at 256x256 for tests (embedding 256x16x16 and decoder as litemedsam-tiny's)."""
    return _build_hr_sam(HR_ENCODERS["hr-test"](), decoder_mlp_dim=128)


def _mim(encoder: str) -> Callable:
    """Masked-image pre-training of an HR encoder (medseg.models.mim2d, objective 'mae' on 2D images)."""
    def build():
        from .mim2d import MaskedImageModel

        return MaskedImageModel(HR_ENCODERS[encoder](), dim=32 if encoder == "hr-test" else 96)

    return build


def build_unet():
    """Automatic (prompt-free) MONAI U-Net at 256x256, channels 16-256 (0.84 M parameters): the baseline."""
    from .unet import UNetSegmenter  # MONAI is imported only when a U-Net is built

    return UNetSegmenter(256)


def build_unet_tiny():
    """A small automatic U-Net at 64x64 for tests."""
    from .unet import UNetSegmenter

    return UNetSegmenter(64, channels=(8, 16, 32), strides=(2, 2), num_res_units=0)


def build_unet3d():
    """Automatic 3D MONAI U-Net (channels 16-256, 4 downsamplings): one input channel, its classes set by the
    'volume' objective's plan (``medseg.train.volume``); no published weights."""
    from .unet import UNetSegmenter

    return UNetSegmenter(None, spatial_dims=3, in_channels=1, out_channels=2)


def build_unet3d_tiny():
    """A small automatic 3D U-Net for tests (channels 8-32, 2 downsamplings)."""
    from .unet import UNetSegmenter

    return UNetSegmenter(None, channels=(8, 16, 32), strides=(2, 2), num_res_units=0, spatial_dims=3,
                         in_channels=1, out_channels=2)


def _vit3d_encoder(tiny: bool = False):
    """The 3D ViT of vit3d / mae3d: tokens of 8^3 voxels, width 192, 8 blocks, 6 heads (3.6 M parameters);
    tiny: width 48, 2 blocks, 2 heads."""
    from .vit import ViTEncoder

    return ViTEncoder(3, 1, patch=8, dim=48 if tiny else 192, depth=2 if tiny else 8, heads=2 if tiny else 6)


def build_vit3d():
    """Automatic 3D ViT with a UNETR decoder (medseg.models.unetr, 3.9 M parameters; 8 channels at full
    resolution, where most of a CPU step goes): one input channel, its classes set by the 'volume'
    objective's plan; start from MAE weights with model.init_encoder."""
    from .unetr import ViTSegmenter

    return ViTSegmenter(_vit3d_encoder(), features=8)


def build_vit3d_tiny():
    from .unetr import ViTSegmenter

    return ViTSegmenter(_vit3d_encoder(tiny=True), features=4)


def build_mae3d():
    """Masked-autoencoder pre-training of vit3d's encoder (medseg.models.mae, objective 'mae'): 75% of the
    tokens hidden, a decoder reading 4 encoder depths deep to shallow."""
    from .mae import MaskedAutoencoder

    return MaskedAutoencoder(_vit3d_encoder())


def build_mae3d_tiny():
    from .mae import MaskedAutoencoder

    return MaskedAutoencoder(_vit3d_encoder(tiny=True), levels=2, decoder_dim=48, decoder_heads=2)


ASSETS = Path(__file__).resolve().parent / "assets"  # weights trained here and shipped, each with its JSON
PROMPTABLE: dict[str, Callable[[], PromptableSegmenter]] = {
    "litemedsam": build_litemedsam,
    "litemedsam-tiny": build_litemedsam_tiny,
    "hr-small": build_hr_small,
    "hr-tiny": build_hr_tiny,
    "hr-test": build_hr_test,
}
AUTOMATIC: dict[str, Callable] = {"unet": build_unet, "unet-tiny": build_unet_tiny, "unet3d": build_unet3d,
                                  "unet3d-tiny": build_unet3d_tiny, "vit3d": build_vit3d, "vit3d-tiny": build_vit3d_tiny}
# 3D models trained here on a train split and shipped (float16 safetensors with the plan and classes inside,
# and a JSON of how each was made): name -> (architecture, weights).
SHIPPED_VOLUMETRIC: dict[str, tuple[str, Path]] = {
    "la-heart-3d": ("unet3d", ASSETS / "la_heart_3d_fp16.safetensors"),
    "hippocampus-3d": ("unet3d", ASSETS / "hippocampus_3d_fp16.safetensors"),
    "acdc-3d": ("unet3d", ASSETS / "acdc_3d_fp16.safetensors"),
}
AUTOMATIC.update({name: AUTOMATIC[arch] for name, (arch, _) in SHIPPED_VOLUMETRIC.items()})
VOLUMETRIC = ("unet3d", "unet3d-tiny", "vit3d", "vit3d-tiny", *SHIPPED_VOLUMETRIC)  # automatic, of volumes
PRETRAINING: dict[str, Callable] = {"mae3d": build_mae3d, "mae3d-tiny": build_mae3d_tiny,  # objective 'mae' only
                                    **{f"mim-{name}": _mim(name) for name in HR_ENCODERS}}
# Universal models (medseg.models.universal): a promptable base + an automatic head whose mask decoder
# starts as a copy of the base's; pretrained = the base's published (or distilled) weights, no tasks yet.
UNIVERSAL: dict[str, str] = {"universal": "litemedsam", "universal-hr": "hr-small", "universal-tiny": "litemedsam-tiny"}
# Promptable 3D models (medseg.models.prompt3d): a promptable 2D base whose frozen encoder embeds each slice
# + a 3D head for clicks and boxes in voxel coordinates: name -> (base, shipped head or None).
PROMPTABLE_3D: dict[str, tuple[str, Path | None]] = {
    "litemedsam-3d": ("litemedsam", ASSETS / "litemedsam_3d_head_fp16.safetensors"),
    "litemedsam-3d-tiny": ("litemedsam-tiny", None)}
MODELS: dict[str, Callable] = {**PROMPTABLE, **AUTOMATIC, **PRETRAINING, **{name: PROMPTABLE[base] for name, base in UNIVERSAL.items()},
                               **{name: PROMPTABLE[base] for name, (base, _) in PROMPTABLE_3D.items()}}
PRETRAINED: dict[str, Callable[[], Path]] = {"litemedsam": litemedsam_weights_path,
                                             **{name: (lambda w=w: w) for name, (_, w) in SHIPPED_VOLUMETRIC.items()}}
# Distilled students: published = an image encoder distilled here (medseg/models/assets, float16, with
# a JSON of how it was made) + the teacher's prompt encoder and mask decoder, unchanged.
DISTILLED: dict[str, tuple[Path, Callable[[], Path]]] = {
    "hr-small": (ASSETS / "hr_small_distilled_fp16.safetensors", litemedsam_weights_path)}
DECODER_PARTS = ("prompt_encoder.", "mask_decoder.")
# The prompt encoder + mask decoder trained here to answer clicks as well as boxes (configs/clicks_2d.yaml;
# float16, with a JSON of how it was made): with weights="shipped" (the default) it replaces the
# published one in every model whose decoder is LiteMedSAM's; weights="published" keeps LiteMedSAM's own.
CLICK_DECODER = ASSETS / "litemedsam_decoder_clicks_fp16.safetensors"
SHIPPED_DECODERS: dict[str, Path] = {"litemedsam": CLICK_DECODER, "hr-small": CLICK_DECODER}
# The automatic head trained here on every 2D task with a split (configs/universal_shipped.yaml; float16,
# with its JSON): weights="shipped" gives the universal model its tasks; "published" starts with none.
UNIVERSAL_HEAD = ASSETS / "universal_head_fp16.safetensors"
SHIPPED_HEADS: dict[str, Path] = {"universal": UNIVERSAL_HEAD}
HEAD_PARTS = ("automatic.",)
WEIGHTS = ("shipped", "published")


def _load_strictly(model, state: dict, what: str) -> None:
    """Load ``state`` into ``model``; any missing, unexpected or mis-shaped tensor is a CheckpointError."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
              if k in state and state[k].shape != v.shape]
    if missing or unexpected or shapes:
        raise CheckpointError(
            f"{what} ({len(missing)} missing keys, e.g. {missing[:3]}; {len(unexpected)} unexpected, e.g. "
            f"{unexpected[:3]}; {len(shapes)} of another shape, e.g. {shapes[:2]}). "
            f"Is it a checkpoint of another model? `medseg models` lists them.")
    model.load_state_dict(state, strict=True)


def _load_parts(model, state: dict, prefixes: tuple[str, ...], what: str) -> None:
    """Load the tensors of ``state`` under ``prefixes`` into the same-named parts of ``model``, strictly
    for those parts (the rest of ``model`` keeps its weights)."""
    own = model.state_dict()
    part = {k: v for k, v in state.items() if k.startswith(prefixes)}
    wanted = {k: v for k, v in own.items() if k.startswith(prefixes) and k in part}
    missing = [k for k in own if k.startswith(prefixes) and k not in part and ".fusion." not in k]
    shapes = [k for k in wanted if wanted[k].shape != part[k].shape]
    if missing or shapes or not wanted:
        raise CheckpointError(f"{what}: {len(missing)} missing tensors (e.g. {missing[:3]}), {len(shapes)} of "
                              f"another shape (e.g. {shapes[:2]})")
    own.update({k: part[k] for k in wanted})
    model.load_state_dict(own, strict=True)


def load_encoder_weights(model, path: str | Path) -> None:
    """Load only the ``image_encoder.*`` tensors of a checkpoint into ``model`` (strictly for the encoder):
    a distilled encoder joins its teacher's prompt encoder and mask decoder."""
    path = Path(path)
    _load_parts(model, load_state_dict(path), ("image_encoder.",), f"{path}: image encoder")


def has_published_weights(name: str) -> bool:
    """Whether ``build_model(name, pretrained=True)`` has weights to load (published or shipped distilled)."""
    if name in PROMPTABLE_3D:  # the base's weights and the shipped 3D head
        head = PROMPTABLE_3D[name][1]
        return head is not None and head.exists() and has_published_weights(PROMPTABLE_3D[name][0])
    name = UNIVERSAL.get(name, name)
    return name in PRETRAINED or name in DISTILLED


def list_models(kind: str | None = None) -> list[str]:
    """Registered names, all or of one kind: ``"promptable"`` (boxes, clicks), ``"automatic"`` (no prompt),
    ``"universal"`` (both: a promptable base plus prompt-free task decoding), ``"promptable-3d"`` (clicks
    and boxes in a volume) or ``"pretraining"`` (masked autoencoders, whose encoders other models start from)."""
    table = {None: MODELS, "promptable": PROMPTABLE, "automatic": AUTOMATIC, "universal": UNIVERSAL,
             "promptable-3d": PROMPTABLE_3D, "pretraining": PRETRAINING}
    if kind not in table:
        raise InputError(f"unknown model kind {kind!r}; use {', '.join(k for k in table if k)}")
    return sorted(table[kind])


def build_model(name: str = "litemedsam", pretrained: bool = False,
                checkpoint: str | Path | None = None, weights: str = "shipped") -> PromptableSegmenter:
    """Build a registered model, optionally with its pretrained weights or a checkpoint file.

    Args:
        pretrained: load the model's weights: published (LiteMedSAM) or distilled here (hr-small).
        checkpoint: load this file instead (strictly).
        weights: with ``pretrained``, "shipped" (default) puts medseg's click-trained prompt encoder and
            mask decoder in the models that have one (``SHIPPED_DECODERS``); "published" keeps the
            published decoder as it is.

    Weights load strictly: a checkpoint of another model is an error that says which keys differ.
    The model is returned in eval mode.
    """
    if name not in MODELS:
        raise InputError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    if weights not in WEIGHTS:
        raise InputError(f"unknown weights {weights!r}; use one of {', '.join(WEIGHTS)}")
    if name in UNIVERSAL:
        return _build_universal(name, pretrained, checkpoint, weights)
    if name in PROMPTABLE_3D:
        return _build_promptable3d(name, pretrained, checkpoint, weights)
    model = MODELS[name]()
    path = None
    if checkpoint is not None:
        path = Path(checkpoint)
    elif pretrained and name in DISTILLED:
        encoder, teacher = DISTILLED[name]
        _load_parts(model, load_state_dict(teacher()), DECODER_PARTS, f"{teacher()}: teacher parts for {name!r}")
        load_encoder_weights(model, encoder)
    elif pretrained:
        if name not in PRETRAINED:
            raise CheckpointError(f"model {name!r} has no published weights; pass checkpoint=... instead.")
        path = PRETRAINED[name]()
    if path is not None:
        state = load_state_dict(path)
        if hasattr(model, "adopt_state"):  # e.g. a 3D U-Net takes the checkpoint's plan and classes first
            model.adopt_state(state)
        _load_strictly(model, state, f"{path}: does not fit model {name!r}")
    if pretrained and checkpoint is None and weights == "shipped" and name in SHIPPED_DECODERS:
        decoder = SHIPPED_DECODERS[name]
        _load_parts(model, load_state_dict(decoder), DECODER_PARTS, f"{decoder}: shipped decoder for {name!r}")
    return model.eval()


def _build_universal(name: str, pretrained: bool, checkpoint: str | Path | None, weights: str):
    """A universal model: its base (pretrained weights if ``pretrained``) wrapped with an automatic head;
    with ``pretrained`` and ``weights="shipped"``, the shipped head (``SHIPPED_HEADS``) and its tasks; a
    checkpoint's task table is adopted before its tensors load strictly."""
    from .universal import UniversalSegmenter

    base = build_model(UNIVERSAL[name], pretrained=pretrained and checkpoint is None, weights=weights)
    model = UniversalSegmenter.from_promptable(base)
    if checkpoint is not None:
        path = Path(checkpoint)
        state = load_state_dict(path)
        if "automatic.task_table" not in state:
            raise CheckpointError(f"{path}: not a checkpoint of a universal model (no automatic.task_table); "
                                  f"`medseg models` lists the models")
        model.adopt_state(state)
        _load_strictly(model, state, f"{path}: does not fit model {name!r}")
    elif pretrained and weights == "shipped" and name in SHIPPED_HEADS:
        head = SHIPPED_HEADS[name]
        state = load_state_dict(head)
        model.adopt_state(state)
        _load_parts(model, state, HEAD_PARTS, f"{head}: shipped automatic head for {name!r}")
    return model.eval()


def _build_promptable3d(name: str, pretrained: bool, checkpoint: str | Path | None, weights: str):
    """A promptable 3D model: its base (pretrained weights if ``pretrained``) + a 3D head; with ``pretrained``
    and ``weights="shipped"``, the head trained here (``PROMPTABLE_3D``); a checkpoint loads strictly."""
    from .prompt3d import Promptable3D, VolumePromptHead

    base_name, head = PROMPTABLE_3D[name]
    base = build_model(base_name, pretrained=pretrained and checkpoint is None, weights=weights)
    model = Promptable3D(base, VolumePromptHead())
    if checkpoint is not None:
        path = Path(checkpoint)
        _load_strictly(model, load_state_dict(path), f"{path}: does not fit model {name!r}")
    elif pretrained and weights == "shipped" and head is not None:
        if not head.exists():
            raise CheckpointError(f"{head}: the shipped 3D head of {name!r} is missing from this installation; "
                                  f"reinstall medseg, or pass weights='published' and train one")
        _load_parts(model, load_state_dict(head), ("volume_head.",), f"{head}: shipped 3D head for {name!r}")
        model.trained_modalities = tuple(read_provenance(head).get("modalities", ()))
    return model.eval()


def has_shipped_tasks(name: str) -> bool:
    """Whether ``build_model(name, pretrained=True)`` comes with trained tasks (a shipped automatic head)."""
    return name in SHIPPED_HEADS
