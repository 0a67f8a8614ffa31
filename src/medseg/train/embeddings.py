"""Image embeddings of a dataset split, computed once with the frozen encoder and cached on disk.

What is cached, per image: ``model.encode(x)[0]``, the encoder output (256, S/4, S/4) float32
(LiteMedSAM: (256, 64, 64)) of ``x, record = prepare_image(image, S, modality)``, i.e. of the
**un-augmented** image, resized so its longest side is S, min-max normalised and zero-padded
bottom/right to S x S: exactly what ``Predictor.set_image`` computes. Images are encoded one at a
time, as the predictor does, so a cached embedding equals the predictor's.

Which augmentations remain possible on a cached embedding:

* prompt augmentation, exact: box jitter (the "supervised_cached" objective uses ``data.box_jitter``),
  click sampling from the object mask, choosing which object/class is prompted;
* flips: NOT used. The encoder is not flip-equivariant (absolute position embeddings, windowed
  attention, padding only at the bottom/right), so ``flip(encode(x)) != encode(flip(x))``: on
  LiteMedSAM the relative difference is about 0.4. A flipped embedding would be a different input
  distribution from the one met at inference, so the cache stores the un-flipped image only;
* intensity or geometric augmentation of the image (contrast, noise, rotation, scaling, crops):
  impossible without re-encoding.

On disk (``cache_dir``: ``train.cache_dir``, default ``~/.cache/medseg/embeddings``)::

    <cache_dir>/<label>-<h>/manifest.json              stems, image files, original and resized (H, W), shards
    <cache_dir>/<label>-<h>/shard-<key>.safetensors    up to ``shard_size`` embeddings, one tensor per stem

``<h>`` hashes the encoder, the preprocessing and the list of image paths; each shard's ``<key>``
hashes (encoder weights fingerprint, preprocessing, the SHA-256 of each of its image files' bytes).
A shard is reused only when its stored key matches, so a changed image recomputes its shard and a
changed model or preprocessing recomputes everything. Files are written atomically (temporary file,
fsync, rename); stale shards of the folder are removed after the manifest is written.
An image already embedded in another folder of the cache with the same encoder and preprocessing
(another split, a subset of cases) is copied from there by its SHA-256 instead of being encoded again.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from medseg.errors import InputError
from medseg.data import preprocess
from medseg.data.cases import Case, plane_2d
from medseg.data.preprocess import prepare_image
from medseg.infer import Predictor
from medseg.infer.predictor import array_digest
from medseg.io import read_image
from medseg.io.outputs import write_bytes
from medseg.models.weights import weights_digest

FORMAT = 1
CACHE_ENV = "MEDSEG_EMBEDDING_CACHE"
DEFAULT_CACHE_DIR = Path("~/.cache/medseg/embeddings")


def cache_dir_of(setting: str | Path | None = None) -> Path:
    """The cache folder: ``setting`` (``train.cache_dir``), else ``~/.cache/medseg/embeddings``; expanded.

    The environment (``$MEDSEG_EMBEDDING_CACHE``, :data:`CACHE_ENV`) is read by the command line,
    which passes it down as ``train.cache_dir``; nothing below reads it."""
    return Path(setting or DEFAULT_CACHE_DIR).expanduser()


def _sha(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def encoder_fingerprint(model: torch.nn.Module) -> str:
    """SHA-256 of the image encoder's state dict (names, dtypes, shapes and values)."""
    return weights_digest(getattr(model, "image_encoder", model))


def preprocess_fingerprint(size: int, modality: str | None) -> dict:
    """What decides the encoder input: side, modality and the preprocessing source code."""
    source = Path(preprocess.__file__).read_bytes()
    return {"size": int(size), "modality": modality, "source": hashlib.sha256(source).hexdigest()[:16]}


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_plane(path: str | Path) -> np.ndarray:
    """A 2D image file -> (H, W) or (H, W, C) array, as the evaluation and training loaders give it."""
    image = read_image(path)
    return plane_2d(image, "the embedding cache")


class EmbeddingStore:
    """Read side of a cache folder: ``store.embedding(stem)`` -> (256, E, E) float32 tensor.

    Shards are memory-mapped on first use (one handle per process; the store pickles without them,
    so DataLoader workers open their own). ``computed`` / ``reused`` count the images encoded /
    found valid (in this folder or another of the cache) by the :func:`build_embeddings` call that
    returned it.
    """

    def __init__(self, folder: str | Path, computed: int = 0, reused: int = 0) -> None:
        self.folder = Path(folder)
        path = self.folder / "manifest.json"
        try:
            self.manifest = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: no readable embedding manifest ({exc}); rebuild the cache") from None
        self.items = {item["stem"]: item for item in self.manifest["items"]}
        self.stems = [item["stem"] for item in self.manifest["items"]]
        self.encoder = self.manifest["encoder"]
        self.computed, self.reused = computed, reused
        self._handles: dict[str, object] = {}

    def __len__(self) -> int:
        return len(self.stems)

    def __contains__(self, stem: str) -> bool:
        return stem in self.items

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handles": {}}

    def original_hw(self, stem: str) -> tuple[int, int]:
        return tuple(self.items[stem]["original_hw"])

    def resized_hw(self, stem: str) -> tuple[int, int]:
        return tuple(self.items[stem]["resized_hw"])

    def check_mask(self, case: Case, mask_hw: tuple[int, int]) -> None:
        """InputError unless ``case``'s mask (H, W) is the size of the image its embedding was made
        from (recorded when it was encoded), so a pair is checked without reading the image again."""
        image_hw = self.original_hw(case.stem)
        if tuple(mask_hw) != image_hw:
            raise InputError(f"{case.mask_path}: the mask is {tuple(mask_hw)} (H, W) but its image {case.image_path} "
                             f"is {image_hw}; resample the mask onto the image's grid")

    def embedding(self, stem: str) -> torch.Tensor:
        """(256, E, E) float32 embedding of ``stem``'s image (a KeyError names an unknown stem)."""
        from safetensors import safe_open

        shard = self.items[stem]["shard"]
        if shard not in self._handles:
            self._handles[shard] = safe_open(str(self.folder / shard), framework="pt")
        return self._handles[shard].get_tensor(stem)


def _shard_header(path: Path) -> dict | None:
    """Metadata of an existing shard, or None when it is missing or unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except Exception:  # noqa: BLE001 - a damaged shard is recomputed
        return None


def reusable_embeddings(cache_dir: Path, encoder: str, prep: dict) -> dict[str, tuple[Path, dict]]:
    """Image SHA-256 -> (shard path, item record) over every cache folder of ``cache_dir`` made with the
    same encoder and preprocessing: an image already embedded for another split or subset is read, not
    encoded again."""
    found: dict[str, tuple[Path, dict]] = {}
    for manifest in sorted(cache_dir.glob("*/manifest.json")):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        if data.get("encoder") != encoder or data.get("preprocess") != prep or data.get("format") != FORMAT:
            continue
        for item in data.get("items", []):
            shard = manifest.parent / item["shard"]
            if "sha256" in item and shard.is_file():
                found.setdefault(item["sha256"], (shard, item))
    return found


def _reuse(known: dict[str, tuple[Path, dict]], digest: str) -> tuple[torch.Tensor, dict] | None:
    """(embedding, record) of an image with this SHA-256 from another cache folder, or None."""
    from safetensors import safe_open

    if digest not in known:
        return None
    shard, item = known[digest]
    try:
        with safe_open(str(shard), framework="pt") as handle:
            tensor = handle.get_tensor(item["stem"])
    except Exception:  # noqa: BLE001 - a vanished or damaged shard: encode instead
        return None
    return tensor, {k: item[k] for k in ("original_hw", "resized_hw", "array_sha1")}


def _encode_shard(model, cases: list[Case], size: int, modality: str | None, device, bar,
                  known: dict[str, tuple[Path, dict]] | None = None, digests: list[str] | None = None,
                  ) -> tuple[dict, list, int]:
    """Encode the images of one shard: ({stem: (256, E, E)}, [item records], number encoded); an image
    found in ``known`` (by its SHA-256 in ``digests``) is copied from there."""
    tensors, records, encoded = {}, [], 0
    for i, case in enumerate(cases):
        found = _reuse(known, digests[i]) if known and digests else None
        if found is not None:
            tensors[case.stem] = found[0]
            records.append({"stem": case.stem, **found[1]})
            bar.update(1)
            continue
        plane = load_plane(case.image_path)
        encoded += 1
        x, record = prepare_image(plane, size, modality)
        with torch.inference_mode():
            tensors[case.stem] = model.encode(x.to(device))[0].float().cpu().contiguous()
        records.append({"stem": case.stem, "original_hw": list(record.original_hw),
                        "resized_hw": list(record.resized_hw), "array_sha1": array_digest(plane)})
        bar.update(1)
    return tensors, records, encoded


def build_embeddings(model, cases: list[Case], cache_dir: str | Path | None = None, *, label: str,
                     modality: str | None = None, shard_size: int = 32, progress: bool = True,
                     device: str | torch.device | None = None) -> EmbeddingStore:
    """Embeddings of ``cases`` with ``model``'s (frozen) encoder, from the cache where it is valid.

    Args:
        model: a PromptableSegmenter (``encode``, ``image_size``, ``image_encoder``).
        cases: the 2D cases to embed (stems must be unique); only ``image_path`` is read.
        cache_dir: root of the cache (default: :func:`cache_dir_of`).
        label: readable part of the folder name, e.g. ``"kvasir_seg-train"``.
        shard_size: images per shard file (a changed image recomputes only its shard).
        device: where to encode (default: the model's device).

    Returns:
        an :class:`EmbeddingStore` over exactly these cases, in their order.
    """
    if not cases:
        raise InputError(f"no cases to embed for {label!r}")
    stems = [c.stem for c in cases]
    if len(set(stems)) != len(stems):
        raise InputError(f"{label}: duplicate stems; embeddings are stored by stem")
    size, root = model.image_size, cache_dir_of(cache_dir)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    encoder, prep = encoder_fingerprint(model), preprocess_fingerprint(size, modality)
    paths = [str(Path(c.image_path).resolve()) for c in cases]
    folder = root / f"{label}-{_sha(encoder, prep, paths)[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    digests = [file_digest(c.image_path) for c in cases]
    chunks = [range(i, min(len(cases), i + shard_size)) for i in range(0, len(cases), shard_size)]
    plan = []  # (chunk, key, file, header or None)
    for chunk in chunks:
        key = _sha(FORMAT, encoder, prep, [(stems[i], digests[i]) for i in chunk])
        name = f"shard-{key[:20]}.safetensors"
        header = _shard_header(folder / name)
        plan.append((chunk, key, name, header if header and header.get("key") == key else None))
    todo = sum(len(chunk) for chunk, _, _, header in plan if header is None)
    model.eval()
    items, shards, known, encoded = [], [], None, 0
    with tqdm(total=todo, desc=f"embed {label}", unit="image", disable=not progress or not todo,
              dynamic_ncols=True) as bar:
        for chunk, key, name, header in plan:
            if header is None:
                from safetensors.torch import save

                if known is None:
                    known = reusable_embeddings(root, encoder, prep)
                tensors, records, n = _encode_shard(model, [cases[i] for i in chunk], size, modality, device, bar,
                                                    known, [digests[i] for i in chunk])
                encoded += n
                meta = {"key": key, "format": str(FORMAT), "records": json.dumps(records)}
                write_bytes(folder / name, save(tensors, metadata=meta))
            else:
                records = json.loads(header["records"])
            for i, record in zip(chunk, records):
                items.append({**record, "image": paths[i], "sha256": digests[i], "shard": name})
            shards.append({"file": name, "key": key, "stems": [stems[i] for i in chunk]})
    manifest = {"format": FORMAT, "label": label, "encoder": encoder, "preprocess": prep,
                "embedding_shape": [int(s) for s in _shape(folder, items)], "dtype": "float32",
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"), "items": items, "shards": shards}
    write_bytes(folder / "manifest.json", json.dumps(manifest, indent=1).encode("utf-8"))
    keep = {s["file"] for s in shards} | {"manifest.json"}
    for path in folder.glob("shard-*.safetensors"):
        if path.name not in keep:
            path.unlink(missing_ok=True)
    return EmbeddingStore(folder, computed=encoded, reused=len(cases) - encoded)


def _shape(folder: Path, items: list[dict]) -> tuple[int, ...]:
    from safetensors import safe_open

    with safe_open(str(folder / items[0]["shard"]), framework="pt") as handle:
        return tuple(handle.get_slice(items[0]["stem"]).get_shape())


class CachedPredictor(Predictor):
    """A :class:`~medseg.infer.Predictor` whose ``set_image`` takes the embedding from a store.

    The image array handed to ``set_image`` is looked up by content (:func:`array_digest`, recorded
    when the embedding was computed); an image not in the store is encoded as usual
    (``misses`` counts those). Works with :func:`medseg.eval.evaluate.evaluate_case` unchanged.
    """

    def __init__(self, model, store: EmbeddingStore, device: str | torch.device | None = "cpu",
                 batch_size: int = 32) -> None:
        if encoder_fingerprint(model) != store.encoder:
            raise InputError(f"{store.folder}: embeddings of another image encoder than this model's; rebuild them")
        super().__init__(model, device, batch_size)
        self.store = store
        self.by_digest = {item["array_sha1"]: stem for stem, item in store.items.items()}
        self.hits = self.misses = 0

    def set_image(self, image: np.ndarray, modality: str | None = None) -> None:
        stem = self.by_digest.get(array_digest(image))
        expected = self.store.manifest["preprocess"]["modality"]
        if stem is None or modality != expected:
            self.misses += 1
            super().set_image(image, modality)
            return
        self.hits += 1
        self.set_embedding(self.store.embedding(stem)[None], self.store.original_hw(stem))
