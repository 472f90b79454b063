"""The API documentation pages, /docs (Swagger UI) and /redoc (ReDoc), served from the package.

FastAPI's own pages load their scripts from cdn.jsdelivr.net, their favicon from
fastapi.tiangolo.com and ReDoc's fonts from fonts.googleapis.com; on an intranet or
behind the mainland-China firewall they render blank. These pages load the same
scripts from `wxgate/api/static/` (vendored with their licences; see its README).
"""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).with_name("static")
ASSETS_PATH = "/docs/assets"
SWAGGER_UI_PATH = "/docs"
REDOC_PATH = "/redoc"

# Swagger UI's default validatorUrl sends the spec's address to validator.swagger.io.
_SWAGGER_UI_PARAMETERS = {"validatorUrl": None}
# The browser may fetch nothing from another host: ReDoc's sidebar, for one, shows an
# image from cdn.redoc.ly, which this policy blocks before any packet leaves (ReDoc
# then hides it). Inline scripts and styles are the pages' own; ReDoc runs its search
# in a worker built from a blob.
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self' 'unsafe-inline'",
        "style-src 'self' 'unsafe-inline'",
        "img-src 'self' data:",
        "worker-src 'self' blob:",
        "connect-src 'self'",
    )
)


def _root(request: Request) -> str:
    """The prefix a reverse proxy serves the app under ("" when none)."""
    return str(request.scope.get("root_path", ""))


def _local_only(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return page


def install_docs(app: FastAPI) -> None:
    """Serve /docs, /redoc and their assets on `app` (built with docs_url and redoc_url None)."""
    app.mount(ASSETS_PATH, StaticFiles(directory=STATIC_DIR), name="docs-assets")
    openapi_url = app.openapi_url or "/openapi.json"

    @app.get(SWAGGER_UI_PATH, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        assets = _root(request) + ASSETS_PATH
        page = get_swagger_ui_html(
            openapi_url=_root(request) + openapi_url,
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{assets}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{assets}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{assets}/swagger-ui/favicon-32x32.png",
            swagger_ui_parameters=_SWAGGER_UI_PARAMETERS,
        )
        return _local_only(page)

    @app.get(REDOC_PATH, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        assets = _root(request) + ASSETS_PATH
        page = get_redoc_html(
            openapi_url=_root(request) + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{assets}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{assets}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
        return _local_only(page)
