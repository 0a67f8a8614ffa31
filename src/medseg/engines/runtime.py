"""Inference engines behind one interface: torch, onnxruntime and OpenVINO, at several precisions.

:func:`engine_model` returns an object with the parts of
:class:`~medseg.models.sam.PromptableSegmenter` that :class:`~medseg.infer.predictor.Predictor` uses:
``image_size``, ``uses_features``, ``encode_features(images (B, 3, S, S))`` -> (embedding, features
or None) and ``decode(embedding, boxes, points, masks, multimask, features)`` -> (logits (N, M, S, S),
iou (N, M)), all torch tensors on the CPU, so every engine gives the Predictor the same API.

* ``torch``: ``fp32`` is the model itself; ``bf16`` runs the image encoder under CPU autocast in
  bfloat16 (AMX / AVX512-BF16 where the CPU has them), the decoder in float32;
* ``onnxruntime``: the exported graphs (:mod:`medseg.engines.export`) at ``fp32``, ``fp16`` (fp16
  storage) or ``int8``; threads = ``torch.get_num_threads()``, spin-waiting off;
* ``openvino``: the same graphs; ``bf16`` is OpenVINO's inference-precision hint on the fp32 graph
  (``fp32`` pins float32: OpenVINO would otherwise pick bf16 by itself on an AMX CPU).

A torch model handed to an ONNX engine is exported once into ``~/.cache/medseg/exports/`` (keyed by
its weights' SHA-256, the precision and the source code the graphs are traced from, so a medseg whose
models compute differently exports afresh; the 8 most recently used are kept) and reused after; an
exported folder can be given directly. OpenVINO keeps what it compiles from an export in the export's
folder (``openvino-cache/``, where that folder is writable), so a later process loads it instead of
compiling again.
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ..errors import InputError
from ..models import PromptableSegmenter
from ..models.sam import resize_square
from ..models.weights import weights_digest
from .export import ExportInfo, export_model, require
from .graphs import pack_prompts

ENGINES = ("torch", "onnxruntime", "openvino")
PRECISIONS = {"torch": ("fp32", "bf16"), "onnxruntime": ("fp32", "fp16", "int8"),
              "openvino": ("fp32", "bf16", "fp16", "int8")}
EXTRAS = {"onnxruntime": "onnx", "openvino": "openvino"}
EXPORT_CACHE = Path("~/.cache/medseg/exports")
CACHED_EXPORTS = 8  # exports kept in EXPORT_CACHE, most recently used first
GRAPH_OUTPUTS = ("embedding", "stride4", "stride8", "logits", "iou")
OPENVINO_CACHE = "openvino-cache"  # OpenVINO's compiled graphs, in the export folder beside the ONNX files


def check_engine(engine: str, precision: str) -> None:
    """InputError for an unknown engine or a precision that engine does not run."""
    if engine not in ENGINES:
        raise InputError(f"unknown engine {engine!r}; use one of {', '.join(ENGINES)}")
    if precision not in PRECISIONS[engine]:
        raise InputError(f"engine {engine!r} runs precision {', '.join(PRECISIONS[engine])}; not {precision!r}")


def engine_model(model: PromptableSegmenter | str | Path, engine: str = "torch", precision: str = "fp32",
                 threads: int | None = None, name: str = "model"):
    """The model (or an exported folder) as the given engine runs it; see the module docstring."""
    check_engine(engine, precision)
    if engine == "torch":
        if not isinstance(model, PromptableSegmenter):
            raise InputError(f"{model}: engine 'torch' runs a built model, not an exported folder; use "
                             f"--engine onnxruntime or openvino for an export")
        return model if precision == "fp32" else Bf16Model(model)
    require(engine, EXTRAS[engine])
    file_precision = "fp32" if precision == "bf16" else precision
    if isinstance(model, PromptableSegmenter):
        folder = cached_export(model, name, file_precision)
    else:
        folder = Path(model)
        found = ExportInfo.read(folder).precision
        if found != file_precision:
            raise InputError(f"{folder} holds a {found} export; precision {precision!r} needs a {file_precision} one "
                             f"(`medseg export ... --precision {file_precision}`)")
    return GraphModel(folder, engine, precision, threads or torch.get_num_threads())


def cached_export(model: PromptableSegmenter, name: str, precision: str, cache: Path | None = None) -> Path:
    """The export of ``model`` at ``precision`` in the export cache, made now if absent (atomically). The
    cache keeps the ``CACHED_EXPORTS`` most recently used exports and deletes older ones when it adds one
    (weights that change from run to run, e.g. a fresh random model, would otherwise fill the disk)."""
    root = (cache or EXPORT_CACHE).expanduser()
    folder = root / f"{type(model).__name__}-{weights_digest(model)[:20]}-{graph_code_digest()[:8]}-{precision}"
    if (folder / "export.json").is_file():
        os.utime(folder)  # most recently used
        return folder
    root.mkdir(parents=True, exist_ok=True)
    _prune_exports(root, keep=CACHED_EXPORTS - 1)
    tmp = Path(tempfile.mkdtemp(prefix=".export-", dir=root))
    try:
        export_model(model, tmp, name, precision)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process made it first
            if not (folder / "export.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


@functools.lru_cache(maxsize=1)
def graph_code_digest() -> str:
    """SHA-256 of the source the exported graphs are traced from: ``medseg/models/*.py`` and this
    package's export and graph modules."""
    package = Path(__file__).resolve().parent.parent
    files = sorted((package / "models").glob("*.py")) + [package / "engines" / "export.py",
                                                          package / "engines" / "graphs.py"]
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


def _prune_exports(root: Path, keep: int) -> None:
    """Delete all but the ``keep`` most recently used export folders of the cache ``root`` (and leftovers
    of interrupted exports older than an hour)."""
    import time

    exports = sorted((p for p in root.iterdir() if p.is_dir() and (p / "export.json").is_file()),
                     key=lambda p: p.stat().st_mtime, reverse=True)
    stale = [p for p in root.glob(".export-*") if time.time() - p.stat().st_mtime > 3600]
    for old in exports[max(keep, 0):] + stale:
        shutil.rmtree(old, ignore_errors=True)


class Bf16Model:
    """A torch model whose image encoder runs under bfloat16 CPU autocast; embeddings back in float32."""

    def __init__(self, model: PromptableSegmenter) -> None:
        self.model = model
        self.image_size, self.uses_features = model.image_size, model.uses_features

    def to(self, device):
        self.model.to(device)
        return self

    def eval(self):
        self.model.eval()
        return self

    def encode_features(self, images: torch.Tensor):
        with torch.autocast(images.device.type, dtype=torch.bfloat16):
            embedding, features = self.model.encode_features(images)
        features = None if features is None else {k: v.float() for k, v in features.items()}
        return embedding.float(), features

    def decode(self, *args, **kwargs):
        return self.model.decode(*args, **kwargs)


class GraphModel:
    """An exported model run by onnxruntime or OpenVINO (see the module docstring)."""

    def __init__(self, folder: Path, engine: str, precision: str, threads: int) -> None:
        self.info = ExportInfo.read(Path(folder))
        self.engine = engine
        self.image_size, self.uses_features = self.info.image_size, self.info.uses_features
        self.mask_size = self.info.mask_input_size
        open_graph = _ort_session if engine == "onnxruntime" else _openvino_model
        self._encoder = open_graph(Path(folder) / self.info.encoder_file, threads, precision)
        self._open_decoder = lambda: open_graph(Path(folder) / self.info.decoder_file, threads, precision)
        self._decoder_run = None  # opened at the first prompt: automatic mode never needs it

    def _decoder(self, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._decoder_run is None:
            self._decoder_run = self._open_decoder()
        return self._decoder_run(feeds)

    def to(self, device):
        if torch.device(device).type != "cpu":
            raise InputError(f"engine {self.engine!r} runs on the CPU here; use engine 'torch' for {device}")
        return self

    def eval(self):
        return self

    def encode_features(self, images: torch.Tensor):
        outputs = self._encoder({"image": images.detach().cpu().float().numpy()})
        embedding = torch.from_numpy(outputs["embedding"])
        if not self.uses_features:
            return embedding, None
        return embedding, {k: torch.from_numpy(outputs[k]) for k in ("stride4", "stride8")}

    def decode(self, embedding: torch.Tensor, boxes=None, points=None, masks=None, multimask: bool = False,
               features=None):
        if self.uses_features and features is None:
            raise ValueError("this model's mask head fuses encoder features: pass features=...")
        n = next((len(t) for t in (boxes, None if points is None else points[0], masks) if t is not None), 1)
        coords, labels = pack_prompts(n, boxes, points)
        if masks is None:
            mask, has = np.zeros((n, 1, self.mask_size, self.mask_size), np.float32), np.zeros(1, np.float32)
        else:
            mask, has = resize_square(masks, self.mask_size).detach().cpu().float().numpy(), np.ones(1, np.float32)
        feeds = {"embedding": embedding.detach().cpu().float().numpy(), "point_coords": coords,
                 "point_labels": labels, "mask_input": mask, "has_mask_input": has}
        if self.uses_features:
            feeds.update({k: features[k].detach().cpu().float().numpy() for k in ("stride4", "stride8")})
        out = self._decoder(feeds)
        logits, iou = torch.from_numpy(out["logits"]), torch.from_numpy(out["iou"])
        keep = slice(1, None) if multimask else slice(0, 1)
        return resize_square(logits[:, keep], self.image_size), iou[:, keep]


def _ort_session(path: Path, threads: int, precision: str):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return dict(zip(names, session.run(names, {k: v for k, v in feeds.items() if k in wanted})))

    return run


def _openvino_model(path: Path, threads: int, precision: str):
    import openvino as ov

    core = ov.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1,
              "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32"}
    if os.access(path.parent, os.W_OK):  # compiled once, then loaded (benchmarks/engines.py: predict_one_image_*)
        config["CACHE_DIR"] = str(path.parent / OPENVINO_CACHE)
    # from the read model, never the path: OpenVINO keys a path's cache entry by the path, so an export
    # overwritten in place would load the old graph; a model's key covers its weights
    compiled = core.compile_model(core.read_model(str(path)), "CPU", config)
    request = compiled.create_infer_request()
    # a port has several names (OpenVINO keeps the ones of the tensors it fused away): take the graph's own
    outputs = {next((n for n in o.get_names() if n in GRAPH_OUTPUTS), o.get_any_name()): o for o in compiled.outputs}
    wanted = {n for i in compiled.inputs for n in i.get_names()}

    def run(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        result = request.infer({k: v for k, v in feeds.items() if k in wanted})
        return {name: np.array(result[port]) for name, port in outputs.items()}

    return run
