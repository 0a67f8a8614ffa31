"""Export a promptable model to ONNX: ``encoder.onnx`` + ``decoder.onnx`` + ``export.json`` in a folder.

Each graph carries its own description in its metadata (``metadata_props``): medseg's version, the
model name, the precision, the SHA-256 of the weights, the input side S, the embedding side E, the mask
prompt side 4E and the preprocessing (:mod:`medseg.data.preprocess`: longest side resized to S, padded
at the bottom and right, intensities to [0, 1], grey repeated to 3 channels; the CT/MR windows are
applied before); ``export.json`` repeats them with the file names. The graphs are described in
:mod:`medseg.engines.graphs`; both have a dynamic batch (images for the encoder, prompt sets for the
decoder) and a dynamic number of points.

Precisions: ``fp32``; ``fp16``: weights stored as float16 and cast to float32 when the graph loads
(half the file, fp32 arithmetic); ``int8``: the encoder's MatMul/Gemm weights quantised to int8 with
activations quantised per call (onnxruntime's dynamic quantisation; convolutions and the prompt
decoder stay fp32). bf16 is a run-time choice of the engine (:mod:`medseg.engines.runtime`), not a file.
A model fine-tuned with LoRA (:mod:`medseg.models.peft`) is exported with the updates folded into its
weights (a copy is folded; the model passed in keeps them); adapters are exported as the ops they are.
"""

from __future__ import annotations

import copy
import io
import json
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__
from ..errors import InputError
from ..io.outputs import plan_outputs, write_bytes, write_text
from ..models import PromptableSegmenter
from ..models.weights import weights_digest
from .graphs import EncoderGraph, PromptDecoderGraph

EXPORT_PRECISIONS = ("fp32", "fp16", "int8")
OPSET = 17
PREPROCESSING = ("longest side resized to image_size (bilinear, antialiased when shrinking), padded with zeros at the bottom "
                 "and right to image_size x image_size; intensities min-max scaled to [0, 1] per image after the "
                 "CT/MR window; grey repeated to 3 channels; layout (B, 3, S, S) float32")


def require(module: str, extra: str):
    """Import an optional engine module, or an InputError naming the extra that installs it."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(f"{module} is not installed: `pip install medseg[{extra}]` (or `pip install {module}`) "
                         f"to use it") from None


@dataclass(frozen=True)
class ExportInfo:
    """What ``export.json`` and every graph's metadata hold."""

    model: str
    precision: str
    weights_sha256: str
    image_size: int
    embedding_size: int
    uses_features: bool
    medseg_version: str = __version__
    preprocessing: str = PREPROCESSING
    encoder_file: str = "encoder.onnx"
    decoder_file: str = "decoder.onnx"

    @property
    def mask_input_size(self) -> int:
        return 4 * self.embedding_size

    def to_dict(self) -> dict:
        return {**self.__dict__, "mask_input_size": self.mask_input_size}

    def metadata(self) -> dict[str, str]:
        """The graph metadata: every field as a string (JSON for the non-strings)."""
        return {k: v if isinstance(v, str) else json.dumps(v) for k, v in self.to_dict().items()}

    @classmethod
    def read(cls, folder: Path) -> "ExportInfo":
        path = folder / "export.json"
        try:
            data = json.loads(path.read_text())
            data.pop("mask_input_size", None)
            return cls(**data)
        except FileNotFoundError:
            raise InputError(f"{folder}: not a medseg export (no export.json); make one with `medseg export`") from None
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}: unreadable ({exc}); export the model again") from None


def export_model(model: PromptableSegmenter, out: str | Path, name: str, precision: str = "fp32",
                 overwrite: bool = False) -> ExportInfo:
    """Write ``out/encoder.onnx``, ``out/decoder.onnx`` and ``out/export.json``; returns the ExportInfo.

    Raises InputError for an unknown precision, a model that is not promptable or has an implicit
    decoder, an existing file
    without ``overwrite``, or a graph the exporter cannot write (with the exporter's reason)."""
    if precision not in EXPORT_PRECISIONS:
        raise InputError(f"unknown precision {precision!r} for export; use one of {', '.join(EXPORT_PRECISIONS)} "
                         f"(bf16 is chosen when running: --precision bf16)")
    if not isinstance(model, PromptableSegmenter):
        raise InputError(f"model {name!r} is not promptable (a U-Net?): only promptable models export to ONNX")
    if model.has_implicit_decoder:
        raise InputError(f"model {name!r} has an implicit decoder (model.decoder: implicit), which the ONNX graphs "
                         f"do not hold yet; run it with engine 'torch'")
    onnx = require("onnx", "onnx")
    out = Path(out)
    info = ExportInfo(name, precision, weights_digest(model), model.image_size,
                      model.prompt_encoder.embedding_size[0], model.uses_features)
    paths = plan_outputs({"encoder": out / info.encoder_file, "decoder": out / info.decoder_file,
                          "export.json": out / "export.json"}, overwrite=overwrite)
    model = model.to("cpu").float().eval()
    if getattr(model, "peft", None) is not None and model.peft.kind == "lora":  # folded into the weights: a plain graph
        from ..models.peft import merge_lora

        model = copy.deepcopy(model)
        merge_lora(model)
    graphs = {"encoder": _encoder_onnx(model), "decoder": _decoder_onnx(model)}
    for part, data in graphs.items():
        proto = onnx.load_from_string(data)
        # int8: the encoder only; the encoder is where the time goes (benchmarks/engines.py: 739 ms
        # against 67 ms for the decoder, LiteMedSAM), and an exact decoder keeps int8's error to one place
        proto = _apply_precision(proto, "fp32" if (precision, part) == ("int8", "decoder") else precision)
        for key, value in {**info.metadata(), "graph": part}.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        try:
            onnx.checker.check_model(proto)
        except onnx.checker.ValidationError as exc:
            raise InputError(f"the exported {part} graph of {name!r} does not pass onnx.checker: {exc}") from None
        out.mkdir(parents=True, exist_ok=True)
        write_bytes(paths[part], proto.SerializeToString())
    write_text(paths["export.json"], json.dumps(info.to_dict(), indent=2) + "\n")
    return info


def _to_onnx(module: torch.nn.Module, args: tuple, input_names: list[str], output_names: list[str],
             dynamic_axes: dict, what: str) -> bytes:
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(module, args, buffer, dynamo=False, opset_version=OPSET, input_names=input_names,
                              output_names=output_names, dynamic_axes=dynamic_axes, do_constant_folding=True)
    except Exception as exc:  # the exporter's errors are of many types; each says what it could not trace
        raise InputError(f"cannot export the {what} to ONNX: {type(exc).__name__}: {str(exc)[:500]}") from None
    return buffer.getvalue()


def _encoder_onnx(model: PromptableSegmenter) -> bytes:
    graph = EncoderGraph(model).eval()
    s = model.image_size
    names = graph.output_names()
    axes = {"image": {0: "images"}, **{n: {0: "images"} for n in names}}
    return _to_onnx(graph, (torch.rand(1, 3, s, s),), ["image"], names, axes, "image encoder")


def _decoder_onnx(model: PromptableSegmenter) -> bytes:
    graph = PromptDecoderGraph(model).eval()
    e = model.prompt_encoder.embedding_size[0]
    with torch.no_grad():  # the encoder graph's outputs, as the decoder graph receives them
        embedding, *maps = EncoderGraph(model).eval()(torch.rand(1, 3, model.image_size, model.image_size))
    args = [embedding, torch.tensor([[[10.0, 10.0], [40.0, 40.0]]]), torch.tensor([[2.0, 3.0]]),
            torch.zeros(1, 1, 4 * e, 4 * e), torch.zeros(1), *maps]
    axes = {"point_coords": {0: "prompts", 1: "points"}, "point_labels": {0: "prompts", 1: "points"},
            "mask_input": {0: "prompts"}, "logits": {0: "prompts"}, "iou": {0: "prompts"}}
    return _to_onnx(graph, tuple(args), graph.input_names(), ["logits", "iou"], axes, "prompt decoder")


def _apply_precision(proto, precision: str):
    if precision == "fp16":
        return _fp16_storage(proto)
    if precision == "int8":
        quantization = require("onnxruntime.quantization", "onnx")
        import logging

        root = logging.getLogger()
        level = root.level
        with tempfile.TemporaryDirectory() as tmp:
            src, dst = Path(tmp) / "fp32.onnx", Path(tmp) / "int8.onnx"
            src.write_bytes(proto.SerializeToString())
            root.setLevel(max(level, logging.ERROR))  # the quantiser logs advice on every call
            try:
                quantization.quantize_dynamic(str(src), str(dst), weight_type=quantization.QuantType.QInt8,
                                              op_types_to_quantize=["MatMul", "Gemm"])
            finally:
                root.setLevel(level)
            import onnx

            return onnx.load(str(dst))
    return proto


def _fp16_storage(proto):
    """Every float32 initializer of more than 16 values stored as float16, followed by a Cast to float32."""
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    graph = proto.graph
    casts, keep = [], []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or np.prod(init.dims) <= 16:
            keep.append(init)
            continue
        half = numpy_helper.from_array(numpy_helper.to_array(init).astype(np.float16), init.name + "__fp16")
        keep.append(half)
        casts.append(helper.make_node("Cast", [half.name], [init.name], to=onnx.TensorProto.FLOAT,
                                      name=init.name + "__cast"))
    del graph.initializer[:]
    graph.initializer.extend(keep)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    return proto
