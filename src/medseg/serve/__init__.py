"""``medseg serve``: interactive segmentation in the browser (and over HTTP) on the CPU.

:mod:`.state` holds the open images, label maps, the encoder cache and the optional 3D model of 3D clicks; :mod:`.files` reads uploads
and paths under ``--root`` safely; :mod:`.app` is the FastAPI app (page + JSON API); :func:`run`
starts it on uvicorn. FastAPI, uvicorn and highdicom come with ``pip install medseg[serve]``.
"""

from __future__ import annotations

import ipaddress
import secrets
import sys
from pathlib import Path

from ..errors import InputError

LOOPBACK = ("127.0.0.1", "localhost", "::1")


def needs_token(host: str) -> bool:
    """True unless ``host`` is a loopback address (only this machine can connect)."""
    if host in LOOPBACK:
        return False
    try:
        return not ipaddress.ip_address(host).is_loopback
    except ValueError:
        return True


def check_extra() -> None:
    """InputError naming the extra when FastAPI/uvicorn are missing."""
    try:
        import fastapi  # noqa: F401
        import multipart  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as error:
        raise InputError(f"medseg serve needs FastAPI and uvicorn ({error.name} is missing): "
                         f"pip install 'medseg[serve]'") from None


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread of the request pool a malloc arena of its own, which keeps freed tensor
    memory per thread: cap them so a long-running server's memory follows its cache (no-op elsewhere)."""
    import ctypes
    import ctypes.util

    try:
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").mallopt(-8, arenas)  # M_ARENA_MAX
    except (OSError, AttributeError):
        pass


def run(predictor, *, model_name: str, host: str = "127.0.0.1", port: int = 8000, root: Path | None = None,
        token: str | None = None, max_upload_mb: float = 512.0, cache_size: int = 16, volume=None) -> int:
    """Serve until interrupted; prints the address (with the token when one is needed). ``volume``: a
    :class:`~medseg.serve.state.VolumeModel` for 3D clicks (None: they are off)."""
    check_extra()
    import uvicorn

    from .app import create_app
    from .state import Store

    if root is not None and not Path(root).is_dir():
        raise InputError(f"--root {root}: not a folder; give the folder whose images the page may open")
    if needs_token(host):
        token = token or secrets.token_urlsafe(24)
        print(f"warning: serving on {host}, reachable from other machines; every request needs the token",
              file=sys.stderr)
    _limit_malloc_arenas()
    store = Store(predictor, cache_size=cache_size, volume=volume)
    app = create_app(store, model_name=model_name, root=None if root is None else Path(root),
                     token=token, max_upload_mb=max_upload_mb)
    shown = f"[{host}]" if ":" in host else host
    print(f"medseg serve: open http://{shown}:{port}/" + (f"?token={token}" if token else ""), flush=True)
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        store.close()
    return 0
