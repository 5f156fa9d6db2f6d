"""Evidence photos of objections: JPEG or PNG by content, ≤ 5 MB each, at most 5, decompression bombs refused,
metadata (EXIF, GPS, comments, ICC, text chunks) removed, sealed at rest; requests over the cap answer JSON 413."""

from __future__ import annotations

import base64
import io
import secrets
from pathlib import Path

import pytest
import sqlalchemy as sa
from PIL import Image

from backend.app import create_app
from backend.core import edge
from backend.core.context import evidence_storage, field_cipher
from backend.core.storage import LocalEvidenceStorage
from backend.errors import DomainError
from backend.extensions import db
from backend.models import Objection
from backend.objections import evidence
from backend.objections.evidence import clean_image, evidence_image
from backend.objections.views import objection_view
from tests.conftest import TEST_SECRETS, _settings
from tests.objections.objection_support import (
    OBJECTIONS,
    file_response,
    filed,
    jpeg_with_gps,
    metadata_of,
    mpo_photo,
    png_bomb,
    png_with_metadata,
)
from tests.support import error_of


def test_the_test_photo_really_carries_gps_and_camera_data():
    meta = metadata_of(jpeg_with_gps())
    assert meta["gps"] and meta["exif"][0x010F] == "SpyCam" and "icc_profile" in meta["info"]


def test_an_accepted_jpeg_comes_back_without_exif_or_gps(citizen, held, civil_queue):
    original = jpeg_with_gps()
    objection = filed(citizen, held.id, files=[(original, "IMG_0001.JPG")])
    assert objection["evidence_count"] == 1

    response = civil_queue.evidence(objection["id"], 1)
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    data = response.get_data()
    meta = metadata_of(data)
    assert meta["format"] == "JPEG"
    assert meta["exif"] == {} and meta["gps"] == {}
    assert not {"exif", "icc_profile", "comment"} & set(meta["info"])
    assert b"SpyCam" not in data and b"Exif" not in data and b"secret comment" not in data
    assert Image.open(io.BytesIO(data)).size == (64, 48)  # the picture itself survives
    listed = civil_queue.get(objection["id"]).get_json()["evidence"]
    assert listed == [{"n": 1, "media_type": "image/jpeg", "width": 64, "height": 48, "size": len(data)}]


def test_a_multi_picture_jpeg_from_a_phone_camera_is_kept_as_the_jpeg_photo_it_holds(citizen, held, civil_queue):
    original = mpo_photo((64, 48))
    assert Image.open(io.BytesIO(original)).format == "MPO"

    objection = filed(citizen, held.id, files=[(original, "IMG_0002.JPG")])

    response = civil_queue.evidence(objection["id"], 1)
    assert response.status_code == 200 and response.mimetype == "image/jpeg"
    meta = metadata_of(response.get_data())
    assert meta["format"] == "JPEG" and meta["exif"] == {} and b"SpyCam" not in response.get_data()
    assert Image.open(io.BytesIO(response.get_data())).size == (64, 48)  # the photo, not the preview


def test_a_png_keeps_its_transparency_and_loses_its_text_chunks(citizen, held, civil_queue):
    objection = filed(citizen, held.id, files=[(png_with_metadata(), "scan.png")])
    data = civil_queue.evidence(objection["id"], 1).get_data()
    meta = metadata_of(data)
    assert meta["format"] == "PNG" and meta["exif"] == {}
    assert not {"Location", "Author", "exif"} & set(meta["info"])
    assert "信阳".encode() not in data and b"SpyCam" not in data
    assert Image.open(io.BytesIO(data)).mode == "RGBA"


def test_the_kind_of_file_is_judged_by_content_not_by_name(citizen, held, civil_queue):
    png = png_with_metadata(mode="RGB")
    objection = filed(citizen, held.id, files=[(png, "photo.jpg")])  # a PNG named .jpg is still a PNG
    assert civil_queue.evidence(objection["id"], 1).mimetype == "image/png"


@pytest.mark.parametrize("content", [
    b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\n",  # a PDF renamed .jpg
    b"MZ\x90\x00\x03\x00\x00\x00",  # a Windows executable
    b"GIF89a\x01\x00\x01\x00\x80\x00\x00\xff\xff\xff\x00\x00\x00,\x00\x00\x00\x00\x01\x00\x01\x00\x00\x02\x02D\x01\x00;",
    b"<svg xmlns='http://www.w3.org/2000/svg'/>",
], ids=["pdf", "exe", "gif", "svg"])
def test_a_non_image_renamed_jpg_is_refused_with_a_clear_error(app, citizen, held, civil_queue, content):
    response = file_response(citizen, held.id, files=[(jpeg_with_gps(), "ok.jpg"), (content, "photo.jpg")])
    error = error_of(response, 422, "evidence_unsupported_type")
    assert error["details"]["fields"] == [{"field": "evidence[2]", "reason": "unsupported_type"}]
    assert "JPEG 或 PNG" in error["message"]
    assert civil_queue.ids() == []  # nothing filed, nothing half-written
    assert not list((Path(app.config["ECERT_EVIDENCE_DIR"])).glob("*/*"))  # no file stored either


def test_a_truncated_jpeg_is_refused_as_corrupt(citizen, held):
    broken = jpeg_with_gps((400, 300))[:600]
    error_of(file_response(citizen, held.id, files=[(broken, "a.jpg")]), 422, "evidence_corrupt")


def test_an_oversized_file_is_a_413(citizen, held, civil_queue):
    big = jpeg_with_gps() + b"\0" * evidence.MAX_FILE_BYTES  # a valid JPEG padded past 5 MB
    error = error_of(file_response(citizen, held.id, files=[(big, "big.jpg")]), 413, "evidence_too_large")
    assert error["details"]["max_bytes"] == evidence.MAX_FILE_BYTES
    assert civil_queue.ids() == []


@pytest.mark.parametrize(("width", "height"), [(30_000, 30_000), (8_000, 8_000)],
                         ids=["beyond-pillow-limit", "beyond-our-limit"])
def test_a_decompression_bomb_is_refused(citizen, held, civil_queue, width, height):
    bomb = png_bomb(width, height)
    assert len(bomb) < 1024
    error = error_of(file_response(citizen, held.id, files=[(bomb, "bomb.png")]), 422, "evidence_too_many_pixels")
    assert error["details"]["max_pixels"] == evidence.MAX_PIXELS
    assert civil_queue.ids() == []


def test_at_most_five_files(citizen, held):
    photos = [(jpeg_with_gps((8, 8)), f"{n}.jpg") for n in range(6)]
    error = error_of(file_response(citizen, held.id, files=photos), 422, "evidence_too_many")
    assert error["details"]["max_files"] == 5
    assert filed(citizen, held.id, files=photos[:5])["evidence_count"] == 5


def test_a_body_over_the_upload_cap_is_a_json_413_not_an_html_page(citizen, held):
    oversized = b"\0" * (5 * evidence.MAX_FILE_BYTES + 1024 * 1024)
    response = file_response(citizen, held.id, files=[(oversized, "huge.jpg")])
    error = error_of(response, 413, "payload_too_large")
    assert response.mimetype == "application/json"
    assert error["details"]["max_bytes"] > evidence.MAX_FILE_BYTES * 5


def test_other_routes_keep_the_1_mib_cap(citizen):
    response = citizen.http.get(OBJECTIONS, headers={**citizen.headers, "Content-Type": "application/json"},
                                data=b"[" + b"0," * 600_000 + b"0]")
    error = error_of(response, 413, "payload_too_large")
    assert error["details"]["max_bytes"] == 1024 * 1024


def test_evidence_is_sealed_at_rest_and_bound_to_its_objection(app, citizen, held, civil_queue):
    objection = filed(citizen, held.id, files=[(png_with_metadata(mode="RGB"), "a.png")])
    [stored] = list(Path(app.config["ECERT_EVIDENCE_DIR"]).glob("*/*"))
    assert stored.parent.name == objection["id"]
    assert b"IHDR" not in stored.read_bytes()  # not a readable PNG on disk
    error_of(civil_queue.evidence(objection["id"], 2), 404, "evidence_not_found")


def test_local_storage_refuses_keys_that_could_leave_its_directory(tmp_path):
    storage = LocalEvidenceStorage(tmp_path)
    for key in ("../etc/passwd", "a/b", "0" * 32 + "/../" + "0" * 28):
        with pytest.raises(ValueError):
            storage.put(key, b"x")


def test_clean_image_strips_exif_orientation_but_keeps_the_picture_upright():
    image = Image.new("RGB", (40, 20), (0, 0, 0))
    image.putpixel((0, 0), (255, 255, 255))
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90° clockwise to display
    out = io.BytesIO()
    image.save(out, "PNG", exif=exif)
    cleaned = clean_image(out.getvalue())
    assert (cleaned.width, cleaned.height) == (20, 40)
    assert metadata_of(cleaned.data)["exif"] == {}


def test_rotating_the_data_key_reseals_objections_and_their_evidence(app, _migrated, tmp_path, clock, citizen, held):
    objection = filed(citizen, held.id, description="对方姓名有误", files=[(jpeg_with_gps(), "a.jpg")])
    new_key = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode()
    rotated = create_app(_settings(_migrated, tmp_path / "rotated", ECERT_CLOCK=clock,
                                   ECERT_EVIDENCE_DIR=app.config["ECERT_EVIDENCE_DIR"],
                                   ECERT_DATA_KEYS=f"{TEST_SECRETS['ECERT_DATA_KEYS']},2:{new_key}"))
    runner = rotated.test_cli_runner()
    first = runner.invoke(args=["keys", "reencrypt-data"])
    assert first.exit_code == 0, first.output
    assert "1 objection evidence file(s) re-sealed" in first.output
    assert "0 objection evidence file(s) re-sealed" in runner.invoke(args=["keys", "reencrypt-data"]).output
    [stored] = list(Path(app.config["ECERT_EVIDENCE_DIR"]).glob("*/*"))
    assert stored.read_bytes()[:2] == b"\x00\x02"
    with rotated.app_context():
        cipher = field_cipher()
        row = db.session.scalar(sa.select(Objection).where(Objection.public_id == objection["id"]))
        assert row is not None and not cipher.is_stale(row.disputed_enc) and not cipher.is_stale(row.description_enc)
        assert objection_view(db.session, cipher, row, now=clock()).description == "对方姓名有误"
        assert metadata_of(evidence_image(evidence_storage(), row, 1))["format"] == "JPEG"
        db.session.rollback()


def test_a_filing_whose_commit_fails_leaves_no_evidence_file_behind(app, monkeypatch, citizen, held, civil_queue):
    def failing_commit() -> DomainError:
        db.session.rollback()
        return DomainError("并发冲突，请重试", code="concurrent_conflict").with_status(409)

    monkeypatch.setattr(edge, "_commit", failing_commit)
    response = file_response(citizen, held.id, files=[(jpeg_with_gps(), "a.jpg"), (jpeg_with_gps(), "b.jpg")])
    error_of(response, 409, "concurrent_conflict")
    assert not list(Path(app.config["ECERT_EVIDENCE_DIR"]).glob("*/*"))
    monkeypatch.undo()
    filed(citizen, held.id, files=[(jpeg_with_gps(), "a.jpg")])
    assert len(list(Path(app.config["ECERT_EVIDENCE_DIR"]).glob("*/*"))) == 1  # a committed filing keeps its file
