"""The HTTP side of ``medseg serve``: a FastAPI app serving the page and the JSON API (imported only
once :func:`medseg.serve.check_extra` found FastAPI).

API (coordinates in the input's pixels; ``slice`` along Z, 0-based):

* ``GET /api/health`` -> ``{"status": "ok", "model", "engine", "precision", "automatic", "volume_model",
  "volume_clicks", "volume_note"}`` (``volume_clicks``: whether 3D clicks are on; ``volume_note``: why not)
* ``GET /api/tasks`` -> ``{"tasks": [{"name", "modality", "classes": {id: name}}]}``: the automatic mode's tasks
* ``GET /api/files`` -> readable files under ``--root``; ``POST /api/images/open {"path"}`` opens one
* ``POST /api/images`` (multipart field ``file``) -> ``{"image_id", "shape" [Z, Y, X], "modality", ...}``
* ``GET /api/images/{id}`` -> the same; ``DELETE`` closes it
* ``GET /api/images/{id}/slices/{z}.png?window=auto|soft|lung|bone&plane=axial|coronal|sagittal`` -> the
  cut for display (coronal: rows are Z, columns X; sagittal: rows Z, columns Y)
* ``GET /api/images/{id}/slices/{z}/labels.png?plane=...&encoding=grey|rgb`` -> the cut's label ids (8 or
  16-bit grey PNG; ``rgb``: red = id % 256, green = id // 256, what the page reads)
* ``POST /api/images/{id}/segment`` ``{"box", "points", "labels", "slice", "plane", "object"}`` ->
  ``{"mask": {"png_base64"}, "score", "object", "slice"}``
* ``POST /api/images/{id}/automatic`` ``{"task", "slice", "plane"}`` -> every class of the task as objects:
  ``{"objects": [{"object", "name", "pixels", "box"}], "slice"}`` (the box, to refine with clicks)
* ``POST /api/images/{id}/propagate`` ``{"slice", "object", "first", "last", "plane"}``: the object's mask on
  the slice walks over slices first..last (one undo step) -> ``{"slices": [...], "pixels"}``
* ``POST /api/images/{id}/segment3d`` ``{"object", "points": [[x, y, z], ...], "labels", "box": [x0, y0, z0, x1,
  y1, z1] | null}``: 3D clicks (voxel indices) -> the object in the whole volume, one undo step; clicks that
  go on from the object's previous 3D prompt refine it -> ``{"object", "voxels", "changed": [first, last]
  slice | null, "refined", "encoded"}`` (409 when the server has no 3D model: ``--volume-model``)
* ``POST /api/images/{id}/encode3d``: encode the volume for 3D clicks now (the first 3D click does it
  otherwise; seconds to tens of seconds on a CPU) -> ``{"encoded": ran now, "slices"}``
* ``POST /api/images/{id}/brush`` ``{"strokes": [[x, y], ...], "radius", "erase", "slice", "plane", "object"}``
* ``POST /api/images/{id}/objects`` ``{"object", "name"}``: name an object (DICOM-SEG segment labels) -> the objects
* ``POST /api/images/{id}/undo``, ``/redo`` -> ``{"slice", "plane"}``; ``GET /api/images/{id}/session`` -> the prompts as JSON
* ``GET /api/images/{id}/labels?format=png|nifti|mha|dicom-seg`` -> the label map file

Every error is JSON ``{"error": message}`` with a 4xx status (413 past ``--max-upload-mb``, 401
without the token when one is required); nothing returns a traceback.
"""

import base64
import hmac
import io
import tempfile
from importlib.resources import files as package_files
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException

from ..errors import InputError
from ..infer.automatic import first_prompts
from ..infer.session import PLANES, plane_axis, prompt_arrays
from .files import list_root, read_under_root, read_upload
from .state import Store, UnknownImage, VolumeClicksOff, with_plane

LABEL_FORMATS = {"png": ".png", "nifti": ".nii.gz", "mha": ".mha", "dicom-seg": ".dcm"}
STATIC = package_files("medseg.serve") / "static"
MAX_CLICKS_3D = 100  # per 3D prompt (the page sends every click of the object)


class OpenRequest(BaseModel):
    path: str


class CutRequest(BaseModel):
    slice: int | None = None
    plane: str | None = None


class SegmentRequest(CutRequest):
    box: list[float] | None = None
    points: list[list[float]] = []
    labels: list[int] | None = None
    object: int = 1


class Segment3dRequest(BaseModel):
    object: int = 1
    points: list[list[float]] = []
    labels: list[int] | None = None
    box: list[float] | None = None


class BrushRequest(CutRequest):
    strokes: list[list[float]]
    radius: float = 3.0
    erase: bool = False
    object: int = 1


class AutomaticRequest(CutRequest):
    task: str


class NameRequest(BaseModel):
    object: int
    name: str


class PropagateRequest(CutRequest):
    object: int = 1
    first: int
    last: int


def check_object(obj: int) -> None:
    if not 1 <= obj <= 65535:
        raise InputError(f"object {obj}: give an object number 1..65535")


def png_bytes(array: np.ndarray) -> bytes:
    """uint8/uint16 (Y, X) or uint8 (Y, X, 3) -> PNG bytes."""
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def create_app(store: Store, *, model_name: str, root: Path | None = None, token: str | None = None,
               max_upload_mb: float = 512.0):
    """The app over ``store``. ``token``: required on every API request (``Authorization: Bearer T``,
    or ``?token=T`` for the page's own requests) when given. ``root``: the folder ``/api/files`` lists
    and ``/api/images/open`` reads from (None: uploads only)."""
    max_bytes = int(max_upload_mb * 1e6)
    app = FastAPI(title="medseg", docs_url=None, redoc_url=None, openapi_url=None)
    predictor = store.predictor

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

    @app.exception_handler(InputError)
    async def _input_error(_, exc: InputError):
        return error(400, str(exc))

    @app.exception_handler(VolumeClicksOff)
    async def _volume_off(_, exc: VolumeClicksOff):
        return error(409, str(exc))

    @app.exception_handler(UnknownImage)
    async def _unknown(_, exc: UnknownImage):
        return error(404, f"no open image {exc.args[0]!r}: it was closed or evicted; open it again")

    @app.exception_handler(RequestValidationError)
    async def _invalid(_, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(400, f"bad request: {where}: {first.get('msg', 'invalid')}")

    @app.exception_handler(HTTPException)
    async def _http(_, exc: HTTPException):
        return error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_, exc: Exception):
        return error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if token is not None and request.url.path.startswith("/api/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip() or \
                request.query_params.get("token", "")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return error(401, "this server needs its token: send 'Authorization: Bearer TOKEN' (printed at start)")
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > max_bytes + 1_000_000):
            return error(413, f"request larger than the upload limit of {max_upload_mb:g} MB (--max-upload-mb)")
        return await call_next(request)

    @app.get("/", response_class=HTMLResponse)
    def page():
        return (STATIC / "index.html").read_text(encoding="utf-8")

    @app.get("/static/{name}")
    def static(name: str):
        kinds = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}
        entry = STATIC / name
        if "/" in name or name.startswith(".") or Path(name).suffix not in kinds or not entry.is_file():
            return error(404, f"no static file {name!r}")
        return Response(entry.read_bytes(), media_type=kinds[Path(name).suffix])

    @app.get("/api/health")
    def health():
        return {"status": "ok", "model": model_name, "engine": predictor.engine, "precision": predictor.precision,
                "automatic": bool(store.tasks), "root": root is not None, "cached_slices": len(store.encodings),
                "open_images": len(store.images), "volume_model": store.volume.name,
                "volume_clicks": store.volume.predictor is not None,
                "volume_note": None if store.volume.predictor is not None else store.volume.note}

    @app.get("/api/tasks")
    def tasks():
        return {"tasks": [{"name": t.name, "modality": t.modality, "classes": {str(k): v for k, v in t.classes.items()}}
                          for t in store.tasks.values()]}

    @app.get("/api/files")
    def files():
        if root is None:
            return {"files": [], "root": False}
        return {"files": list_root(root), "root": True}

    @app.post("/api/images/open")
    def open_from_root(request: OpenRequest):
        if root is None:
            raise InputError("this server has no --root folder: upload the file instead")
        image, folder, dicom = read_under_root(root, request.path)
        return store.add(request.path, image, folder, dicom).info()

    @app.post("/api/images")
    async def upload(request: Request):
        form = await request.form(max_files=1, max_fields=4, max_part_size=max_bytes + 1)
        item = form.get("file")
        if item is None or isinstance(item, str):
            raise InputError("send the image as the multipart form field 'file'")
        data = await item.read(max_bytes + 1)
        if len(data) > max_bytes:
            return error(413, f"{item.filename}: larger than the upload limit of {max_upload_mb:g} MB (--max-upload-mb)")
        if not data:
            raise InputError(f"{item.filename}: the file is empty")
        image, folder, dicom = read_upload(item.filename or "upload", data, max_bytes)
        return store.add(item.filename or "upload", image, folder, dicom).info()

    @app.get("/api/images/{image_id}")
    def info(image_id: str):
        return store.get(image_id).info()

    @app.delete("/api/images/{image_id}")
    def close(image_id: str):
        store.remove(image_id)
        return {"closed": image_id}

    def cut_of(opened, request: CutRequest) -> tuple[int, int]:
        axis = plane_axis(request.plane)
        return axis, opened.check_slice(request.slice, axis)

    @app.get("/api/images/{image_id}/slices/{z}.png")
    def slice_png(image_id: str, z: int, window: str = "auto", plane: str = "axial"):
        return Response(png_bytes(store.get(image_id).display(z, window, plane_axis(plane))), media_type="image/png")

    @app.get("/api/images/{image_id}/slices/{z}/labels.png")
    def labels_png(image_id: str, z: int, plane: str = "axial", encoding: str = "grey"):
        opened = store.get(image_id)
        axis = plane_axis(plane)
        ids = np.take(opened.labels, opened.check_slice(z, axis), axis=axis)
        if encoding == "rgb":
            rgb = np.stack([ids % 256, ids // 256, np.zeros_like(ids)], axis=-1).astype(np.uint8)
            return Response(png_bytes(rgb), media_type="image/png")
        if encoding != "grey":
            raise InputError(f"encoding {encoding!r}: give grey or rgb")
        return Response(png_bytes(ids.astype(np.uint8) if ids.max(initial=0) < 256 else ids),
                        media_type="image/png")

    @app.post("/api/images/{image_id}/segment")
    def segment(image_id: str, request: SegmentRequest):
        opened = store.get(image_id)
        axis, z = cut_of(opened, request)
        check_object(request.object)
        if any(len(p) != 2 for p in request.points):
            raise InputError("points: give each point as [x, y]")
        if request.labels and len(request.labels) != len(request.points):  # [] with no points: the page's empty list
            raise InputError(f"labels: give one label per point ({len(request.points)}), 1 positive 0 negative")
        if request.box is None and not request.points:
            raise InputError("give a box [x0, y0, x1, y1] or at least one point")
        if request.box is not None and len(request.box) != 4:
            raise InputError(f"box: give [x0, y0, x1, y1], got {request.box}")
        prompt = {"slice": z, "object": request.object, "box": request.box, "points": request.points,
                  "labels": (request.labels or [1] * len(request.points)) if request.points else None}
        mask, score = store.segment(opened, axis, z, *prompt_arrays(prompt))  # as `medseg predict --prompts` replays it
        opened.paint(axis, z, request.object, mask, with_plane(prompt, axis))
        encoded = base64.b64encode(png_bytes(mask.astype(np.uint8) * 255)).decode()
        return {"mask": {"png_base64": encoded, "shape": list(mask.shape)}, "score": round(score, 4),
                "object": request.object, "slice": z, "pixels": int(mask.sum())}

    @app.post("/api/images/{image_id}/segment3d")
    def segment3d(image_id: str, request: Segment3dRequest):
        opened = store.get(image_id)
        store.check_volume(opened)
        check_object(request.object)
        if len(request.points) > MAX_CLICKS_3D:
            raise InputError(f"points: at most {MAX_CLICKS_3D} 3D clicks per prompt, got {len(request.points)}; "
                             f"start a new prompt for the object")
        # the clicks and the box are checked before the volume is encoded
        result = store.segment_volume(opened, request.object, request.points, request.labels, request.box)
        return {"object": request.object, **result}

    @app.post("/api/images/{image_id}/encode3d")
    def encode3d(image_id: str):
        opened = store.get(image_id)
        return {"encoded": store.encode_volume(opened), "slices": opened.shape[0]}

    @app.post("/api/images/{image_id}/brush")
    def brush(image_id: str, request: BrushRequest):
        opened = store.get(image_id)
        axis, z = cut_of(opened, request)
        h, w = opened.cut_shape(axis)
        if not request.strokes or any(len(p) != 2 for p in request.strokes) or len(request.strokes) > 10000:
            raise InputError("strokes: give 1..10000 points [x, y]")
        if not 0.5 <= request.radius <= 200:
            raise InputError(f"radius {request.radius}: give 0.5..200 pixels")
        check_object(request.object)
        if any(not (0 <= x <= w - 1 and 0 <= y <= h - 1) for x, y in request.strokes):
            raise InputError(f"strokes: every point must lie in the image of {w}x{h} (width x height) pixels")
        pixels = opened.brush(axis, z, request.object, request.strokes, request.radius, request.erase)
        return {"object": request.object, "slice": z, "pixels": pixels, "erase": request.erase}

    @app.post("/api/images/{image_id}/automatic")
    def automatic(image_id: str, request: AutomaticRequest):
        opened = store.get(image_id)
        axis, z = cut_of(opened, request)
        result = store.automatic(opened, axis, z, request.task)
        opened.paint_classes(axis, z, result.labels, result.classes,
                             with_plane({"slice": z, "automatic": request.task}, axis))
        boxes = first_prompts(result.labels)
        return {"slice": z, "task": request.task, "objects": [
            {"object": c, "name": name, "pixels": int((result.labels == c).sum()),
             "box": boxes[c]["box"].tolist() if c in boxes else None} for c, name in result.classes.items()]}

    @app.post("/api/images/{image_id}/propagate")
    def propagate(image_id: str, request: PropagateRequest):
        opened = store.get(image_id)
        axis, z = cut_of(opened, request)
        check_object(request.object)
        done = store.propagate(opened, axis, z, request.object, request.first, request.last)
        view = np.moveaxis(opened.labels, axis, 0)
        return {"slice": z, "object": request.object, "slices": sorted(done),
                "pixels": int((view[request.first:request.last + 1] == request.object).sum())}

    @app.post("/api/images/{image_id}/objects")
    def name_object(image_id: str, request: NameRequest):
        opened = store.get(image_id)
        check_object(request.object)
        name = request.name.strip()
        if not 1 <= len(name) <= 64 or not name.isprintable():
            raise InputError("name: give 1..64 printable characters")
        opened.objects[request.object] = name
        return {"objects": opened.objects}

    def stepped(image_id: str, backwards: bool) -> dict:
        axis, z = store.get(image_id).step(backwards=backwards)
        return {"slice": z, "plane": list(PLANES)[axis]}

    @app.post("/api/images/{image_id}/undo")
    def undo(image_id: str):
        return stepped(image_id, True)

    @app.post("/api/images/{image_id}/redo")
    def redo(image_id: str):
        return stepped(image_id, False)

    @app.get("/api/images/{image_id}/session")
    def session(image_id: str):
        opened = store.get(image_id)
        volume = {"volume_model": store.volume.name, "volume_weights": store.volume.weights} \
            if store.volume.predictor is not None else {}
        return {"image": opened.name, "shape": list(opened.shape), "model": model_name, **volume,
                "objects": opened.objects, "prompts": opened.prompts}

    @app.get("/api/images/{image_id}/labels")
    def labels(image_id: str, format: str = "nifti"):
        opened = store.get(image_id)
        if format not in LABEL_FORMATS:
            raise InputError(f"format {format!r}: give one of {', '.join(LABEL_FORMATS)}")
        stem = Path(opened.name).name.split(".")[0] or "image"
        filename = f"{stem}_labels{LABEL_FORMATS[format]}"
        headers = {"Content-Disposition": f'attachment; filename="{filename}"'}
        if format == "dicom-seg":
            if opened.dicom_source is None:
                raise InputError(f"{opened.name}: DICOM-SEG references a DICOM input; this image is "
                                 f"{opened.image.meta.format}: export nifti, mha or png")
            from ..io.dicomseg import dicom_seg_bytes

            data = dicom_seg_bytes(opened.labels, opened.dicom_source, opened.objects)
            return Response(data, media_type="application/dicom", headers=headers)
        return Response(label_file(opened, LABEL_FORMATS[format]), media_type="application/octet-stream",
                        headers=headers)

    return app


def label_file(opened, suffix: str) -> bytes:
    """The label map written as ``suffix`` with the input's geometry, as bytes."""
    from ..io import write_label

    with tempfile.TemporaryDirectory(prefix="medseg-serve-") as tmp:
        like = opened.image.meta if suffix != ".png" else None
        path = write_label(opened.labels, Path(tmp) / f"labels{suffix}", like=like)
        return path.read_bytes()
