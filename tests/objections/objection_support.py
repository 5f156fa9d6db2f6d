"""Helpers for the objection tests: evidence images (clean, with EXIF/GPS, bombs), filing through the citizen API,
and a department system working its queue on /gov/v1/objections."""

from __future__ import annotations

import io
import json
import struct
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image, PngImagePlugin

from tests.support import Department

if TYPE_CHECKING:
    from tests.conftest import Citizen, DeptClient

OBJECTIONS = "/api/v1/objections"
GOV_OBJECTIONS = "/gov/v1/objections"
GPS_IFD = 0x8825
DEFAULT_DISPUTED = [{"field": "party_b_name", "claimed_value": "李娜娜"}]


# -- images -----------------------------------------------------------------------------------------------------

def jpeg_with_gps(size: tuple[int, int] = (64, 48)) -> bytes:
    """A JPEG carrying camera make/model, GPS coordinates (信阳), a comment and an ICC profile."""
    image = Image.new("RGB", size, (180, 40, 40))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    exif[0x0110] = "Model X"  # Model
    exif[GPS_IFD] = {1: "N", 2: (32.0, 7.0, 30.0), 3: "E", 4: (114.0, 4.0, 0.0)}
    out = io.BytesIO()
    image.save(out, "JPEG", exif=exif, comment=b"secret comment", icc_profile=b"\0" * 128)
    return out.getvalue()


def mpo_photo(size: tuple[int, int] = (64, 48)) -> bytes:
    """A multi-picture JPEG (MPO) as phone cameras save it: the photo, with camera EXIF and a smaller second picture."""
    photo, preview = Image.new("RGB", size, (40, 160, 40)), Image.new("RGB", (size[0] // 2, size[1] // 2))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"  # Make
    out = io.BytesIO()
    photo.save(out, "MPO", save_all=True, append_images=[preview], exif=exif)
    return out.getvalue()


def png_with_metadata(size: tuple[int, int] = (40, 30), mode: str = "RGBA") -> bytes:
    """A PNG with text chunks (one naming a place) and EXIF."""
    image = Image.new(mode, size, (10, 120, 200, 255) if mode == "RGBA" else (10, 120, 200))
    info = PngImagePlugin.PngInfo()
    info.add_text("Location", "信阳市浉河区 32.12N 114.07E")
    info.add_text("Author", "张伟")
    exif = Image.Exif()
    exif[0x010F] = "SpyCam"
    out = io.BytesIO()
    image.save(out, "PNG", pnginfo=info, exif=exif)
    return out.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def png_bomb(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width × height pixels (1-bit grey), with a little compressed zero data: a
    decoder that trusted it would allocate the whole image."""
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\0" * 4096, 9)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", rows) + _chunk(b"IEND", b"")


def metadata_of(data: bytes) -> dict[str, Any]:
    image = Image.open(io.BytesIO(data))
    return {"format": image.format, "info": dict(image.info), "exif": dict(image.getexif()),
            "gps": dict(image.getexif().get_ifd(GPS_IFD))}


# -- filing (citizen) -------------------------------------------------------------------------------------------

def file_response(citizen: Citizen, certificate_id: str, *, disputed: Any = None, description: str = "对方姓名登记有误",
                  files: list[tuple[bytes, str]] | None = None, **extra: Any) -> Any:
    """POST /api/v1/objections as multipart/form-data; `files` are (content, file name) pairs."""
    data: dict[str, Any] = {
        "certificate_id": certificate_id,
        "disputed": disputed if isinstance(disputed, str) else json.dumps(disputed or DEFAULT_DISPUTED,
                                                                          ensure_ascii=False),
        "description": description, **extra,
    }
    if files:
        data["evidence"] = [(io.BytesIO(content), name) for content, name in files]
    return citizen.http.post(OBJECTIONS, data=data, headers=citizen.headers, content_type="multipart/form-data")


def filed(citizen: Citizen, certificate_id: str, **kwargs: Any) -> dict[str, Any]:
    response = file_response(citizen, certificate_id, **kwargs)
    assert response.status_code == 201, response.get_json()
    return dict(response.get_json())


def citizen_get(citizen: Citizen, objection_id: str) -> Any:
    return citizen.http.get(f"{OBJECTIONS}/{objection_id}", headers=citizen.headers)


# -- a department's queue ---------------------------------------------------------------------------------------

@dataclass
class Queue:
    """A department's business system with the `objections` scope (and `issue`, to reissue corrections)."""

    api: Department

    @classmethod
    def of(cls, dept: DeptClient) -> Queue:
        return cls(Department(dept))

    @property
    def http(self) -> Any:
        return self.api.http

    def list(self, **query: Any) -> Any:
        return self.http.get(GOV_OBJECTIONS, query_string=query, headers=self.api.headers)

    def ids(self, **query: Any) -> list[str]:
        response = self.list(limit=100, **query)
        assert response.status_code == 200, response.get_json()
        return [item["id"] for item in response.get_json()["items"]]

    def get(self, objection_id: str) -> Any:
        return self.http.get(f"{GOV_OBJECTIONS}/{objection_id}", headers=self.api.headers)

    def evidence(self, objection_id: str, n: int) -> Any:
        return self.http.get(f"{GOV_OBJECTIONS}/{objection_id}/evidence/{n}", headers=self.api.headers)

    def act(self, objection_id: str, action: str, body: dict[str, Any] | None = None) -> Any:
        return self.http.post(f"{GOV_OBJECTIONS}/{objection_id}/{action}", json=body or {}, headers=self.api.headers)

    def done(self, objection_id: str, action: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        response = self.act(objection_id, action, body)
        assert response.status_code == 200, response.get_json()
        return dict(response.get_json())
