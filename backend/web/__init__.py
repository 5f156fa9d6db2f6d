"""Pages: the scan-to-verify page (亮证核验) and the staff console (工作台)."""
