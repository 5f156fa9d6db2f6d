"""Evidence images for objections: checked by content, decoded with a pixel limit, re-encoded without any metadata
(EXIF, GPS, XMP, ICC, text chunks), sealed with the data key and kept through a storage interface."""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from datetime import datetime

from PIL import Image, ImageOps, UnidentifiedImageError
from sqlalchemy import select
from sqlalchemy.orm import Session

from backend.audit.chain import record_event
from backend.core.storage import EvidenceNotFound, EvidenceStorage, SealedEvidenceStorage
from backend.errors import PayloadTooLarge, ValidationFailed
from backend.kernel.actors import Actor
from backend.models.objections import Objection, ObjectionEvidence

MAX_FILES = 5
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_PIXELS = 40_000_000  # 40 megapixels: any phone photo, far below what a bomb expands to
FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png"}
# Pillow's JPEG reader names a multi-picture JPEG (MPO: the photo plus previews or a depth image, as many phone
# cameras save) "MPO". Its first picture is the photo, a JPEG: that one is kept, re-encoded like any JPEG.
_READS_AS = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG"}
JPEG_QUALITY = 85


@dataclass(frozen=True)
class CleanImage:
    """An image re-encoded from its pixels alone: nothing of the original file but the picture survives."""

    data: bytes
    media_type: str
    width: int
    height: int


def _refused(reason: str, message: str, position: int, **details: object) -> ValidationFailed:
    return ValidationFailed(message, code=f"evidence_{reason}",
                            details={"fields": [{"field": f"evidence[{position}]", "reason": reason}], **details})


def _open(data: bytes, position: int, max_pixels: int) -> Image.Image:
    with warnings.catch_warnings():
        # Pillow only warns between its own limit and twice it: a bomb must be an error at any size.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data), formats=list(FORMATS))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise _refused("too_many_pixels", f"第 {position} 个证明材料图片像素过多（疑似解压炸弹），已拒绝",
                           position, max_pixels=max_pixels) from exc
        except UnidentifiedImageError as exc:
            raise _refused("unsupported_type", f"第 {position} 个证明材料不是 JPEG 或 PNG 图片", position,
                           accepted=sorted(FORMATS.values())) from exc
        except (OSError, ValueError, SyntaxError) as exc:
            raise _refused("corrupt", f"第 {position} 个证明材料图片已损坏，无法读取", position) from exc
    width, height = image.size
    if width <= 0 or height <= 0 or width * height > max_pixels:
        image.close()
        raise _refused("too_many_pixels", f"第 {position} 个证明材料图片像素过多（上限 {max_pixels} 像素），已拒绝",
                       position, max_pixels=max_pixels, width=width, height=height)
    return image


def clean_image(data: bytes, *, position: int = 1, max_bytes: int = MAX_FILE_BYTES,
                max_pixels: int = MAX_PIXELS) -> CleanImage:
    """Check and re-encode one uploaded image; raises 413 for too many bytes, 422 for anything not a sound image."""
    if len(data) > max_bytes:
        raise PayloadTooLarge(f"第 {position} 个证明材料超过 {max_bytes // (1024 * 1024)} MB",
                              code="evidence_too_large",
                              details={"fields": [{"field": f"evidence[{position}]", "reason": "too_large"}],
                                       "max_bytes": max_bytes})
    if not data:
        raise _refused("empty", f"第 {position} 个证明材料是空文件", position)
    image = _open(data, position, max_pixels)
    image_format = _READS_AS[image.format or ""]  # opened with formats=FORMATS: one of _READS_AS
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image.load()
            upright = ImageOps.exif_transpose(image)  # keep the photo the right way up once EXIF is gone
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise _refused("too_many_pixels", f"第 {position} 个证明材料图片像素过多（疑似解压炸弹），已拒绝", position,
                       max_pixels=max_pixels) from exc
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise _refused("corrupt", f"第 {position} 个证明材料图片已损坏，无法读取", position) from exc
    finally:
        image.close()
    has_alpha = upright.mode in ("RGBA", "LA", "PA") or "transparency" in upright.info
    if image_format == "JPEG":
        mode = "L" if upright.mode in ("L", "1") else "RGB"
    else:
        mode = "RGBA" if has_alpha else ("L" if upright.mode in ("L", "1") else "RGB")
    converted = upright.convert(mode)
    # A new image from the pixels alone: no `info`, so no EXIF, GPS, XMP, ICC profile or text chunks to carry over.
    fresh = Image.frombytes(mode, converted.size, converted.tobytes())
    out = io.BytesIO()
    if image_format == "JPEG":
        fresh.save(out, format="JPEG", quality=JPEG_QUALITY, optimize=True)
    else:
        fresh.save(out, format="PNG", optimize=True)
    return CleanImage(out.getvalue(), FORMATS[image_format], fresh.width, fresh.height)


def check_count(count: int, max_files: int = MAX_FILES) -> None:
    if count > max_files:
        raise ValidationFailed(f"证明材料最多 {max_files} 个", code="evidence_too_many",
                               details={"fields": [{"field": "evidence", "reason": "too_many"}],
                                        "max_files": max_files})


# -- reading --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class EvidenceFile:
    data: bytes
    media_type: str


def evidence_file(storage: EvidenceStorage, objection: Objection, n: int) -> EvidenceFile:
    """The n-th (1-based) cleaned evidence image and its media type; a position without one is a 404."""
    item = next((e for e in objection.evidence if e.position == n), None)
    if item is None:
        raise EvidenceNotFound()
    return EvidenceFile(storage.get(item.storage_key), item.media_type)


def evidence_image(storage: EvidenceStorage, objection: Objection, n: int) -> bytes:
    """The n-th (1-based) cleaned evidence image as stored (metadata already stripped at upload)."""
    return evidence_file(storage, objection, n).data


def record_evidence_viewed(session: Session, objection: Objection, n: int, *, actor: Actor, now: datetime) -> None:
    """Audit a reading of an evidence image (personal data: the photos may show documents or faces)."""
    record_event(session, actor=actor, action="objection.evidence_viewed", now=now, object_type="objection",
                 object_id=objection.public_id, details={"n": n})


def reseal_evidence(session: Session, storage: SealedEvidenceStorage, *, batch_size: int = 500) -> int:
    """After a data key rotation: re-encrypt every evidence file still sealed under an older key (idempotent).
    Returns how many files were re-sealed."""
    resealed, last_id = 0, 0
    while keys := session.execute(select(ObjectionEvidence.id, ObjectionEvidence.storage_key)
                                  .where(ObjectionEvidence.id > last_id).order_by(ObjectionEvidence.id)
                                  .limit(batch_size)).all():
        last_id = keys[-1][0]
        resealed += sum(storage.reseal(key) for _, key in keys)
    return resealed
