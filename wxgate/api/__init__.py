"""The HTTP API (FastAPI): `wxgate.api.app.create_app` builds it over a backend."""
