"""Export and inference engines: ONNX graphs of the promptable models, run by torch, onnxruntime or
OpenVINO at fp32, bf16, fp16 storage or int8 (:mod:`.export`, :mod:`.runtime`, :mod:`.graphs`)."""

from .export import EXPORT_PRECISIONS, ExportInfo, export_model
from .runtime import ENGINES, PRECISIONS, check_engine, engine_model

__all__ = ["ENGINES", "EXPORT_PRECISIONS", "PRECISIONS", "ExportInfo", "check_engine", "engine_model", "export_model"]
