"""QR images of show-code URLs: error correction M, version ≤ 10, as PNG or SVG."""

from __future__ import annotations

import io
from dataclasses import dataclass

import qrcode
from PIL import Image
from qrcode.constants import ERROR_CORRECT_M

from backend.errors import DomainError

MAX_VERSION = 10  # DESIGN §5: small enough for any phone camera at arm's length
BOX_SIZE = 8  # pixels per module: a version-9 code is 488 px wide, sharp on a phone screen
BORDER = 4  # the quiet zone the standard asks for


@dataclass(frozen=True)
class QrCode:
    version: int
    modules: list[list[bool]]  # including the quiet zone


def make_qr(data: str) -> QrCode:
    """Encode `data` (byte mode) at error-correction level M; refuse anything that needs a version above 10."""
    code = qrcode.QRCode(error_correction=ERROR_CORRECT_M, border=BORDER)
    code.add_data(data, optimize=0)
    code.make(fit=True)
    if code.version is None or code.version > MAX_VERSION:
        raise DomainError("亮证码过长，无法生成二维码", code="show_code_too_long").with_status(500)
    return QrCode(code.version, code.get_matrix())


def png(code: QrCode, box_size: int = BOX_SIZE) -> bytes:
    """Black modules on white, `box_size` pixels each, 1-bit PNG."""
    size = len(code.modules)
    image = Image.new("1", (size, size), 1)
    image.putdata([0 if dark else 1 for row in code.modules for dark in row])
    image = image.resize((size * box_size, size * box_size), Image.Resampling.NEAREST)
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


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
