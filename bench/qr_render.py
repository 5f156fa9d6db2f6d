"""QR rendering micro-benchmark (not a test): show-code QR images per second on one core, in one process.

Times the app's own `backend.core.qr` (make_qr + png, or svg) on show-code URLs with fresh random tokens, the
way POST /api/v1/wallet/certificates/{id}/show-codes with Accept: image/png renders them. Reports images per
wall-clock second and per CPU second of this process: the second is what one core does, whatever else the
machine is busy with. Usage: `python bench/qr_render.py --duration 5 --rounds 2` (see bench/README.md).
"""

from __future__ import annotations

import argparse
import base64
import io
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT_ROOT))  # run as a script, only bench/ is on sys.path

from backend.core import qr  # noqa: E402
from backend.keys import showcode  # noqa: E402

TARGET = 300  # issue 4: QR PNG ≥ 300 images/s on one core
PUBLIC_URL = "https://ecert.xinyang.gov.cn"  # a production-like public URL: version 9 codes


def token() -> str:
    """A random string shaped like a show-code token (132 base64url characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(showcode.TOKEN_BYTES)).decode("ascii")


def check(url: str) -> str:
    """Decode one image with a real QR decoder (zxing-cpp, via Pillow), so the timing is of working images."""
    import zxingcpp
    from PIL import Image

    code = qr.make_qr(url)
    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(qr.png(code))))
    if len(found) != 1 or found[0].text != url or found[0].ec_level != "M":
        raise SystemExit(f"the rendered QR image does not decode to {url!r}")
    return f"version {code.version}, {len(code.modules)} modules with the quiet zone, level M, decodes"


def render_png(url: str) -> None:
    qr.png(qr.make_qr(url))


def render_svg(url: str) -> None:
    qr.svg(qr.make_qr(url))


def measure(render: Callable[[str], None], public_url: str, duration: float) -> tuple[int, float, float]:
    """(images, wall seconds, CPU seconds) of rendering for `duration` wall seconds, a fresh URL each time."""
    urls = [showcode.url_for_token(public_url, token()) for _ in range(1000)]
    for url in urls[:20]:  # warm-up
        render(url)
    images = 0
    wall, cpu = time.perf_counter(), time.process_time()
    deadline = wall + duration
    while time.perf_counter() < deadline:
        render(urls[images % len(urls)])
        images += 1
    return images, time.perf_counter() - wall, time.process_time() - cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per round (default 5)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds per format (default 2)")
    parser.add_argument("--public-url", default=PUBLIC_URL, help=f"the URL before /v/ (default {PUBLIC_URL})")
    parser.add_argument("--svg", action="store_true", help="also time SVG rendering")
    args = parser.parse_args()
    print(f"QR of {args.public_url}/v/<132-character token>: {check(showcode.url_for_token(args.public_url, token()))}")
    print(f"one process (pid {os.getpid()}), {args.rounds} rounds of {args.duration:g} s; target PNG ≥ {TARGET}/s\n")
    formats = [("png", render_png)] + ([("svg", render_svg)] if args.svg else [])
    print(f"{'format':<6} {'round':>5} {'images':>8} {'per s':>8} {'per CPU s':>10} {'ms each':>8}")
    worst = float("inf")
    for name, render in formats:
        for round_number in range(1, args.rounds + 1):
            images, wall, cpu = measure(render, args.public_url, args.duration)
            per_cpu = images / cpu if cpu else 0.0
            print(f"{name:<6} {round_number:>5} {images:>8} {images / wall:>8.1f} {per_cpu:>10.1f} "
                  f"{cpu / images * 1000:>8.2f}")
            if name == "png":
                worst = min(worst, per_cpu)
    met = worst >= TARGET
    print(f"\nPNG: {worst:.0f} images per CPU second in the slowest round: "
          f"target {TARGET} {'met' if met else 'MISSED'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
