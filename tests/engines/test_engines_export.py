"""``export_model`` / ``medseg export``: self-describing ONNX graphs that pass onnx.checker, nothing overwritten."""

from __future__ import annotations

import json

import onnx
import pytest

from medseg.engines import ExportInfo, export_model
from medseg.engines.export import weights_digest
from medseg.errors import InputError
from medseg.models import build_model


def test_export_writes_two_checked_graphs_that_describe_themselves(tiny, tmp_path):
    name, model = tiny
    info = export_model(model, tmp_path / "out", name)
    for part, file in (("encoder", "encoder.onnx"), ("decoder", "decoder.onnx")):
        proto = onnx.load(str(tmp_path / "out" / file))
        onnx.checker.check_model(proto)
        meta = {p.key: p.value for p in proto.metadata_props}
        assert meta["graph"] == part and meta["model"] == name and meta["precision"] == "fp32"
        assert meta["weights_sha256"] == weights_digest(model) and int(meta["image_size"]) == model.image_size
        assert "longest side" in meta["preprocessing"]
    data = json.loads((tmp_path / "out" / "export.json").read_text())
    assert data["mask_input_size"] == 4 * model.prompt_encoder.embedding_size[0]
    assert ExportInfo.read(tmp_path / "out") == info


def test_fp16_storage_halves_the_files(tiny, tmp_path):
    name, model = tiny
    export_model(model, tmp_path / "a", name)
    export_model(model, tmp_path / "b", name, "fp16")
    for file in ("encoder.onnx", "decoder.onnx"):
        full, half = ((tmp_path / d / file).stat().st_size for d in ("a", "b"))
        assert half < 0.62 * full, file


def test_an_existing_export_is_not_overwritten_without_asking(tmp_path):
    model = build_model("litemedsam-tiny")
    export_model(model, tmp_path, "litemedsam-tiny")
    before = (tmp_path / "encoder.onnx").read_bytes()
    with pytest.raises(InputError, match="exists"):
        export_model(model, tmp_path, "litemedsam-tiny", "fp16")
    assert (tmp_path / "encoder.onnx").read_bytes() == before
    export_model(model, tmp_path, "litemedsam-tiny", "fp16", overwrite=True)
    assert ExportInfo.read(tmp_path).precision == "fp16"


def test_export_errors(tmp_path):
    with pytest.raises(InputError, match="unknown precision 'bf16'.*chosen when running"):
        export_model(build_model("litemedsam-tiny"), tmp_path, "x", "bf16")
    with pytest.raises(InputError, match="not promptable"):
        export_model(build_model("unet-tiny"), tmp_path, "unet-tiny")
    with pytest.raises(InputError, match="not a medseg export"):
        ExportInfo.read(tmp_path)
    (tmp_path / "export.json").write_text("{broken")
    with pytest.raises(InputError, match="unreadable"):
        ExportInfo.read(tmp_path)
