"""Pages and public endpoints: health, JWKS, OpenAPI, status lists, scan-to-verify, the staff console."""
