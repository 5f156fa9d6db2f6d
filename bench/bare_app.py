"""The bare Flask endpoint bench/run.py compares the platform with: `GET /` answering `{"ok": true}`, nothing else.

Served by the same gunicorn settings as the platform in the same run (`gunicorn bench.bare_app:app`), so that the
ratio to it tells what the platform's request edge and work cost on top of Flask and gunicorn themselves.
"""

from __future__ import annotations

from flask import Flask, Response, jsonify

app = Flask(__name__)


@app.get("/")
def ok() -> Response:
    return jsonify({"ok": True})
