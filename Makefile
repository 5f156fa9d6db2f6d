# Two commands for a newcomer: `make run` (service with demo data on SQLite) and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8000
HOST ?= 127.0.0.1
# Show-code URLs and token audiences follow the port the demo is served on.
export ECERT_PUBLIC_URL ?= http://localhost:$(PORT)
STAMP := $(VENV)/.installed

.PHONY: run test lint typecheck bench clean cjk-font

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV) || { echo "python3 -m venv failed: install Python 3.11+ with venv (Debian: apt-get install python3-venv)"; exit 1; }
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP) cjk-font
	$(BIN)/flask --app wsgi db upgrade
	$(BIN)/flask --app wsgi demo load
	ECERT_DEV_LOGIN=1 $(BIN)/gunicorn --bind $(HOST):$(PORT) --workers $${WEB_CONCURRENCY:-2} --timeout 180 wsgi:app  # request logs come from the app (JSON, tokens redacted)

test: $(STAMP) cjk-font
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# Card images (card.png) draw Chinese with a real CJK font, never boxes: install Debian's Noto CJK when we can.
CJK_FONT_PACKAGES := fonts-noto-cjk fontconfig
NOTO_CJK_FONT := /usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc
cjk-font:
	@if { [ -n "$$ECERT_CJK_FONT" ] && [ -f "$$ECERT_CJK_FONT" ]; } \
	    || [ -f $(NOTO_CJK_FONT) ] \
	    || fc-list :lang=zh-cn 2>/dev/null | grep -q .; then \
	  :; \
	elif [ "$$(id -u)" -eq 0 ] && command -v apt-get >/dev/null; then \
	  echo "== installing a CJK font for certificate card images: $(CJK_FONT_PACKAGES)"; \
	  { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $(CJK_FONT_PACKAGES); } \
	    || echo "!! installing $(CJK_FONT_PACKAGES) failed: card images will answer 503 font_unavailable"; \
	else \
	  echo "!! No CJK font found: card images (card.png) will answer 503 font_unavailable. Install one:"; \
	  echo "   sudo apt-get install --no-install-recommends $(CJK_FONT_PACKAGES)   (Debian/Ubuntu)"; \
	  echo "   or set ECERT_CJK_FONT=/path/to/a/font.ttc that has Chinese glyphs"; \
	fi

lint: $(STAMP)
	$(BIN)/ruff check backend miniapp_api tests bench wsgi.py
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
