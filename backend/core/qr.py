"""QR images of show-code URLs: error correction M, version ≤ 10, as PNG or SVG."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Final

import zxingcpp

from backend.errors import DomainError

MAX_VERSION = 10  # DESIGN §5: small enough for any phone camera at arm's length
BOX_SIZE = 8  # pixels per module: a version-9 code is 488 px wide, sharp on a phone screen
BORDER = 4  # the quiet zone the standard asks for
# Bytes a symbol of version 1, 2, … holds in byte mode at error-correction level M (ISO/IEC 18004, table 7).
# The version is chosen from this, as for a single byte-mode segment, so the size of a code never depends
# on which characters its token happens to contain.
BYTE_CAPACITY_M: Final = (14, 26, 42, 62, 84, 106, 122, 152, 180, 213)
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


@dataclass(frozen=True)
class QrCode:
    version: int
    modules: list[list[bool]]  # including the quiet zone


def make_qr(data: str) -> QrCode:
    """Encode `data` at error-correction level M; refuse anything that needs a version above 10."""
    size_bytes = len(data.encode())
    options: dict[str, str] = {}
    if not data.isascii():
        options["eci"] = "UTF-8"  # say how the bytes are to be read; its header takes at most 2 bytes' room
        size_bytes += 2
    version = next((v for v, capacity in enumerate(BYTE_CAPACITY_M, 1) if size_bytes <= capacity), None)
    if version is None:
        raise DomainError("亮证码过长，无法生成二维码", code="show_code_too_long").with_status(500)
    # Text, not bytes: bytes would get a "binary" ECI header. The encoder's optimal choice of segment modes
    # never takes more room than a single byte-mode segment, so the data fits the version chosen above.
    symbol = zxingcpp.create_barcode(data, zxingcpp.BarcodeFormat.QRCode, ec_level="M", version=version, **options)
    # One byte per module, 0 for dark (the type stub omits the image's buffer protocol).
    pixels = bytes(memoryview(symbol.to_image(scale=1, add_quiet_zones=False)))  # type: ignore[arg-type]
    size = 4 * version + 17
    if len(pixels) != size * size:
        raise RuntimeError(f"QR encoder answered {len(pixels)} modules for version {version}")
    quiet = [False] * BORDER
    blank = [[False] * (size + 2 * BORDER) for _ in range(BORDER)]
    rows = [quiet + [pixel == 0 for pixel in pixels[y * size:(y + 1) * size]] + quiet for y in range(size)]
    return QrCode(version, blank + rows + [row[:] for row in blank])


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(code: QrCode, box_size: int = BOX_SIZE) -> bytes:
    """Black modules on white, `box_size` pixels each: a 1-bit grayscale PNG, written directly (a third of the
    time Pillow's encoder takes for the same image)."""
    width = len(code.modules) * box_size
    lines = []
    for row in code.modules:
        bits = "".join(("0" if dark else "1") * box_size for dark in row)  # 1-bit grayscale: 1 is white
        bits += "1" * (-width % 8)
        line = b"\x00" + int(bits, 2).to_bytes(len(bits) // 8, "big")  # filter type 0 (none)
        lines.append(line * box_size)
    header = struct.pack(">IIBBBBB", width, width, 1, 0, 0, 0, 0)  # bit depth 1, grayscale, no interlace
    return (_PNG_SIGNATURE + _png_chunk(b"IHDR", header) + _png_chunk(b"IDAT", zlib.compress(b"".join(lines)))
            + _png_chunk(b"IEND", b""))


def svg(code: QrCode, box_size: int = BOX_SIZE) -> str:
    """One path of horizontal runs of dark modules, in module units scaled by the viewBox."""
    size = len(code.modules)
    runs = []
    for y, row in enumerate(code.modules):
        x = 0
        while x < size:
            if row[x]:
                start = x
                while x < size and row[x]:
                    x += 1
                runs.append(f"M{start} {y}h{x - start}v1h-{x - start}z")
            else:
                x += 1
    pixels = size * box_size
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{pixels}" height="{pixels}" '
            f'viewBox="0 0 {size} {size}" shape-rendering="crispEdges">'
            f'<rect width="{size}" height="{size}" fill="#fff"/>'
            f'<path fill="#000" d="{"".join(runs)}"/></svg>')
