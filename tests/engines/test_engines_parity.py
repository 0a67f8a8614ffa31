"""Every engine behind the Predictor: the same API, the same masks as torch fp32."""

from __future__ import annotations

import builtins
import os

import numpy as np
import pytest

from medseg.data.masks import dice
from medseg.engines import engine_model, export_model, runtime
from medseg.errors import InputError
from medseg.infer import Predictor

ENGINE_PRECISIONS = [("onnxruntime", "fp32"), ("onnxruntime", "fp16"), ("onnxruntime", "int8"),
                     ("openvino", "fp32"), ("openvino", "bf16"), ("torch", "bf16")]


def _image() -> np.ndarray:
    rng = np.random.default_rng(0)
    img = rng.normal(30.0, 8.0, (50, 80)).astype(np.float32)
    img[10:35, 20:55] += 120.0
    return img


PROMPTS = [{"box": np.array([[18.0, 8, 57, 37], [2, 2, 30, 45]])},
           {"points": np.array([[30.0, 20], [70, 45]]), "point_labels": np.array([1, 0])},
           {"box": np.array([18.0, 8, 57, 37]), "points": np.array([[30.0, 20]]), "multimask": True}]


def _masks(predictor: Predictor) -> list[np.ndarray]:
    predictor.set_image(_image())
    return [predictor.predict(**p) for p in PROMPTS]


@pytest.mark.parametrize("engine, precision", ENGINE_PRECISIONS)
def test_every_engine_gives_the_masks_of_torch_fp32(tiny, engine, precision):
    _, model = tiny
    reference = _masks(Predictor(model, device="cpu"))
    got = _masks(Predictor(model, engine=engine, precision=precision))
    for ref, out in zip(reference, got):
        assert out.masks.shape == ref.masks.shape and out.scores.shape == ref.scores.shape
        for a, b in zip(ref.masks.reshape(-1, *ref.masks.shape[-2:]), out.masks.reshape(-1, *out.masks.shape[-2:])):
            # random weights make speckled masks, so reduced precision moves more pixels here than with real
            # weights (those are held to 0.99 in the data-marked tests)
            assert dice(a, b) >= (0.999 if precision == "fp32" else 0.95)
        np.testing.assert_allclose(out.scores, ref.scores, atol=0.05 if precision != "fp32" else 1e-4)


def test_fp32_onnx_engines_match_torch_closely(tiny):
    _, model = tiny
    reference = _masks(Predictor(model, device="cpu"))
    for engine in ("onnxruntime", "openvino"):
        for ref, out in zip(reference, _masks(Predictor(model, engine=engine))):
            np.testing.assert_allclose(out.logits, ref.logits, atol=1e-3, rtol=1e-3)


def test_an_export_folder_runs_directly_and_its_precision_must_match(tmp_path):
    from medseg.models import build_model

    model = build_model("litemedsam-tiny").eval()
    export_model(model, tmp_path / "int8", "litemedsam-tiny", "int8")
    predictor = Predictor(tmp_path / "int8", engine="onnxruntime", precision="int8")
    predictor.set_image(_image())
    assert predictor.predict(box=np.array([18.0, 8, 57, 37])).masks.shape == (1, 1, 50, 80)
    with pytest.raises(InputError, match="holds a int8 export.*--precision fp32"):
        Predictor(tmp_path / "int8", engine="openvino", precision="bf16")
    with pytest.raises(InputError, match="not a medseg export"):
        Predictor(tmp_path, engine="onnxruntime")
    with pytest.raises(InputError, match="engine 'torch' runs a built model"):
        engine_model(tmp_path / "int8", "torch")


def test_the_export_for_an_engine_is_made_once_and_reused(export_cache):
    from medseg.models import build_model

    model = build_model("litemedsam-tiny").eval()
    Predictor(model, engine="onnxruntime")
    made = sorted(p.name for p in export_cache.iterdir())
    assert len(made) == 1 and made[0].endswith("-fp32")
    stamp = (export_cache / made[0] / "encoder.onnx").stat().st_mtime_ns
    Predictor(model, engine="openvino", precision="bf16")  # bf16 runs the fp32 graphs
    assert sorted(p.name for p in export_cache.iterdir()) == made
    assert (export_cache / made[0] / "encoder.onnx").stat().st_mtime_ns == stamp


def test_the_export_cache_keeps_the_most_recently_used(export_cache, monkeypatch):
    """Weights that change every run (a fresh random model) must not fill the disk: past CACHED_EXPORTS
    the least recently used export goes; one just used stays."""
    from medseg.engines.runtime import cached_export
    from medseg.models import build_model

    monkeypatch.setattr(runtime, "CACHED_EXPORTS", 2)
    first = build_model("litemedsam-tiny").eval()
    a = cached_export(first, "a", "fp32")
    b = cached_export(build_model("litemedsam-tiny").eval(), "b", "fp32")
    os.utime(a, (1, 1)), os.utime(b, (2, 2))  # a is older; using it again makes it the newest
    assert cached_export(first, "a", "fp32") == a
    (export_cache / ".export-leftover").mkdir()
    os.utime(export_cache / ".export-leftover", (3, 3))  # an interrupted export, long ago
    c = cached_export(build_model("litemedsam-tiny").eval(), "c", "fp32")
    assert sorted(p.name for p in export_cache.iterdir()) == sorted([a.name, c.name])


def test_the_export_cache_exports_afresh_when_the_model_code_changes(export_cache, monkeypatch):
    """A cached graph traced by an older medseg (models that computed differently) is not reused."""
    from medseg.engines.runtime import cached_export, graph_code_digest
    from medseg.models import build_model

    model = build_model("litemedsam-tiny").eval()
    before = cached_export(model, "a", "fp32")
    assert graph_code_digest()[:8] in before.name
    monkeypatch.setattr(runtime, "graph_code_digest", lambda: "0" * 64)
    after = cached_export(model, "a", "fp32")
    assert after != before and (after / "export.json").is_file()


def test_engine_errors(monkeypatch):
    from medseg.models import build_model

    model = build_model("litemedsam-tiny")
    with pytest.raises(InputError, match="unknown engine 'tensorrt'"):
        Predictor(model, engine="tensorrt")
    with pytest.raises(InputError, match="runs precision fp32, fp16, int8; not 'bf16'"):
        Predictor(model, engine="onnxruntime", precision="bf16")
    with pytest.raises(InputError, match="runs on the CPU"):
        Predictor(model, device="cuda", engine="openvino")
    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name.startswith("openvino"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    monkeypatch.delitem(__import__("sys").modules, "openvino", raising=False)
    with pytest.raises(InputError, match=r"pip install medseg\[openvino\]"):
        Predictor(model, engine="openvino")


def test_openvino_keeps_what_it_compiled_and_an_export_overwritten_in_place_is_compiled_afresh(tmp_path):
    """The compile cache sits in the export's folder; it is keyed by the graph's content, so a folder
    re-exported with other weights never loads the old compiled graph."""
    import torch

    from medseg.models import build_model

    folder = tmp_path / "export"
    outputs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("litemedsam-tiny").eval()
        export_model(model, folder, "litemedsam-tiny", "fp32", overwrite=seed > 0)
        for graph in ("encoder.onnx", "decoder.onnx"):  # the same size and time stamps as the first export's
            os.utime(folder / graph, ns=(10**18, 10**18))
        reference = _masks(Predictor(model, device="cpu"))
        for _ in range(2):  # compiled, then loaded from the cache
            got = _masks(Predictor(folder, engine="openvino"))
            np.testing.assert_allclose(got[0].logits, reference[0].logits, atol=1e-3, rtol=1e-3)
        outputs.append(got[0].logits)
        assert any((folder / runtime.OPENVINO_CACHE).iterdir())
    assert not np.allclose(outputs[0], outputs[1], atol=1e-3)
