"""``medseg serve`` under load on loopback: what a person clicking in the page waits for.

Starts a real ``medseg serve`` (shipped LiteMedSAM, torch fp32, 2 threads, ``--cache-size 4``) in a fresh
process under ``/usr/bin/time -v`` and drives it over HTTP, as the page does:

* open: upload a 1024x1024 image (a dsb2018_nuclei train image: the test split has none that size) and get its first mask from a box
  (upload + encoder + decoder, seconds; median of ``OPENS``);
* one client: ``CLICKS`` clicks on an image whose embedding is cached (round trip, ms: p50, p95);
* four clients at once, each on a kvasir_seg test image of its own that it has opened (its first
  click, which encodes the image, timed apart), then ``CLICKS`` clicks each, all four clicking at
  the same time: p50/p95 of those round trips; errors;
* memory: ``ROUNDS`` rounds of one click on each of 8 images (twice the cache size, so every round
  encodes again): the server's resident MB after each round (flat = bounded by the cache), and its
  peak from ``/usr/bin/time``.

    python benchmarks/serve_load.py [--quick] [--json OUT]

JSON: ``{"open_s", "one_client": {"p50_ms", "p95_ms", "n"}, "four_clients": {"p50_ms", "p95_ms", "n",
"first_click", "errors"}, "rss_mb_per_round": [...], "cached_slices" (after the rounds), "peak_mb", ...}``.
``tests/serve/test_serve_load.py`` runs ``--quick`` in CI.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DEFAULT_DATA, REPO, THREADS, peak_mb_from_time, require_data, write_json  # noqa: E402

CLICKS, OPENS, CLIENTS, IMAGES, ROUNDS = 60, 3, 4, 8, 5
QUICK = {"clicks": 8, "opens": 1}


def request(port: int, path: str, body: bytes | None = None, content_type: str | None = None) -> tuple[float, dict]:
    started = time.perf_counter()
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=body,
                                 headers={"Content-Type": content_type} if content_type else {})
    with urllib.request.urlopen(req, timeout=120) as answer:
        data = json.loads(answer.read())
    return time.perf_counter() - started, data


def post_json(port: int, path: str, payload: dict) -> tuple[float, dict]:
    return request(port, path, json.dumps(payload).encode(), "application/json")


def upload(port: int, path: Path) -> dict:
    boundary = "medsegbenchboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    return request(port, "/api/images", body, f"multipart/form-data; boundary={boundary}")[1]


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def server_pid(timer_pid: int) -> int:
    """The python child of /usr/bin/time."""
    children = Path(f"/proc/{timer_pid}/task/{timer_pid}/children").read_text().split()
    return int(children[0]) if children else timer_pid


def percentiles(seconds: list[float]) -> dict:
    ms = sorted(1e3 * s for s in seconds)
    if not ms:
        return {"p50_ms": None, "p95_ms": None, "n": 0}
    return {"p50_ms": round(statistics.median(ms), 1), "p95_ms": round(ms[min(len(ms) - 1, int(0.95 * len(ms)))], 1),
            "n": len(ms)}


def clicks_on(port: int, info: dict, n: int, seed: int) -> list[float]:
    """``n`` single clicks at spread-out interior pixels of the image."""
    import numpy as np

    _, h, w = info["shape"]
    rng = np.random.default_rng(seed)
    times = []
    for _ in range(n):
        x, y = float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.2, 0.8) * h)
        times.append(post_json(port, f"/api/images/{info['image_id']}/segment", {"points": [[x, y]], "labels": [1]})[0])
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "serve_load.json")
    args = parser.parse_args(argv)
    require_data(args.data)
    from medseg.data.datasets import dataset_cases, evenly_spaced

    clicks, opens = (QUICK["clicks"], QUICK["opens"]) if args.quick else (CLICKS, OPENS)
    big = [c.image_path for c in dataset_cases(args.data / "dsb2018_nuclei", "train")  # timing only: no test
           if _size(c.image_path) == (1024, 1024)][:opens]                                # image is 1024x1024
    if not big:
        raise SystemExit("no 1024x1024 image in dsb2018_nuclei's train split")
    pictures = [c.image_path for c in evenly_spaced(dataset_cases(args.data / "kvasir_seg", "test"), IMAGES)]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "OMP_NUM_THREADS": str(THREADS)}
    server = subprocess.Popen(["/usr/bin/time", "-v", sys.executable, "-m", "medseg.cli", "serve", "--port", str(port),
                               "--threads", str(THREADS), "--cache-size", "4", "--max-upload-mb", "64"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        server.stdout.readline()
        for _ in range(300):
            try:
                health = request(port, "/api/health")[1]
                break
            except OSError:
                time.sleep(0.2)
        pid = server_pid(server.pid)
        open_times = []
        for path in big:
            started = time.perf_counter()
            info = upload(port, path)
            post_json(port, f"/api/images/{info['image_id']}/segment", {"box": [300, 300, 700, 700]})
            open_times.append(time.perf_counter() - started)
        one = clicks_on(port, info, clicks, seed=0)

        infos = [upload(port, p) for p in pictures]
        cached, errors = [], []
        first = [post_json(port, f"/api/images/{i['image_id']}/segment", {"points": [[12, 12]]})[0]
                 for i in infos[:CLIENTS]]  # each client opens its image: the first click encodes it

        def client(info: dict, k: int) -> None:
            try:
                cached.extend(clicks_on(port, info, clicks, seed=k + 1))
            except Exception as error:  # noqa: BLE001 - counted and reported
                errors.append(repr(error))

        threads = [threading.Thread(target=client, args=(info, k)) for k, info in enumerate(infos[:CLIENTS])]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        rounds = []  # memory: every image in turn, twice the cache size, so each round encodes again
        for _ in range(ROUNDS):
            for info in infos:
                post_json(port, f"/api/images/{info['image_id']}/segment", {"points": [[12, 12]]})
            rounds.append(rss_mb(pid))
        cached_slices = request(port, "/api/health")[1]["cached_slices"]
    finally:
        try:  # /usr/bin/time does not pass SIGTERM on: stop the server itself, then time reports
            os.kill(server_pid(server.pid), 15)
        except (OSError, ValueError):
            server.terminate()
        _, stderr = server.communicate(timeout=60)
    result = {"model": health["model"], "engine": health["engine"], "threads": THREADS, "quick": args.quick,
              "open_s": round(statistics.median(open_times), 3), "open_image": "dsb2018_nuclei train, 1024x1024 (timing only)",
              "one_client": percentiles(one), "four_clients": {**percentiles(cached), "first_click": percentiles(first),
                                                               "errors": len(errors)},
              "rss_mb_per_round": rounds, "cache_size": 4, "cached_slices": cached_slices, "images_cycled": len(infos),
              "peak_mb": peak_mb_from_time(stderr)}
    print(f"open a 1024x1024 image to its first mask: {result['open_s']:.2f} s (median of {len(open_times)})")
    print(f"one client, cached embedding: click p50 {result['one_client']['p50_ms']} ms, p95 {result['one_client']['p95_ms']} ms "
          f"(n={len(one)})")
    four = result["four_clients"]
    print(f"4 clients at once: cached clicks p50 {four['p50_ms']} ms, p95 {four['p95_ms']} ms (n={four['n']}); "
          f"first click (encodes the image) p50 {four['first_click']['p50_ms']} ms; errors {four['errors']}")
    print(f"server memory after each round over {len(infos)} images (cache 4): {rounds} MB; peak {result['peak_mb']} MB")
    if errors:
        print("errors:", *errors[:5], sep="\n  ")
    write_json(result, args.json)
    return 1 if errors else 0


def _size(path: Path) -> tuple[int, int]:
    from PIL import Image

    with Image.open(path) as image:
        return image.size


if __name__ == "__main__":
    sys.exit(main())
