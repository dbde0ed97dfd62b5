"""`/docs`: the OpenAPI document and a Swagger UI whose assets come from an installed package.

No CDN: the page, its script, its stylesheet and its icon are all served by the
gateway itself (from `swagger-ui-bundle-v2`), so the docs work on a machine with
no internet access and leak no visitor to a third party.
"""

from __future__ import annotations

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
from litestar.openapi.spec import (
    Components,
    OpenAPI,
    OpenAPIHeader,
    OpenAPIResponse,
    OpenAPIType,
    Operation,
    Schema,
    SecurityScheme,
)
from litestar.router import Router
from litestar.static_files import create_static_files_router
from swagger_ui_bundle import swagger_ui_path

DOCS_PATH = "/docs"
ASSETS_PATH = f"{DOCS_PATH}/assets"
# The only files the page loads; nothing else of the package is served.
_ASSETS = {
    "js": "swagger-ui-bundle.js",
    "preset": "swagger-ui-standalone-preset.js",
    "css": "swagger-ui.css",
    "icon": "favicon-32x32.png",
}

# The two ways to give an API key; either one is enough (a list of alternatives).
API_KEY_SCHEME = "ApiKey"
BEARER_SCHEME = "Bearer"
API_KEY_SECURITY: list[dict[str, list[str]]] = [{API_KEY_SCHEME: []}, {BEARER_SCHEME: []}]
TRACE_HEADER = "x-fb-trace-id"


def security_schemes() -> dict[str, SecurityScheme]:
    """`X-API-Key: <key>` and `Authorization: Bearer <key>`, so the docs page can send a key."""
    return {
        API_KEY_SCHEME: SecurityScheme(
            type="apiKey",
            name="X-API-Key",
            security_scheme_in="header",
            description="A project's API key (`wagate projects create`, `wagate keys create`).",
        ),
        BEARER_SCHEME: SecurityScheme(
            type="http",
            scheme="bearer",
            description="The same API key as `Authorization: Bearer <key>` (as pywa sends it).",
        ),
    }


def trace_header() -> OpenAPIHeader:
    """The `x-fb-trace-id` header every error answer carries (also its `fbtrace_id`)."""
    return OpenAPIHeader(
        schema=Schema(type=OpenAPIType.STRING),
        description="The answer's `fbtrace_id`, also written to the gateway's log line",
    )


def document_trace_ids(openapi: OpenAPI) -> None:
    """Declare `x-fb-trace-id` on every error answer of every operation."""
    for item in (openapi.paths or {}).values():
        for method in ("get", "post", "patch", "put", "delete"):
            operation: Operation | None = getattr(item, method)
            for status, response in ((operation and operation.responses) or {}).items():
                if status[0] in "45" and isinstance(response, OpenAPIResponse):
                    response.headers = {**(response.headers or {}), TRACE_HEADER: trace_header()}


def docs_config(title: str, version: str, description: str) -> OpenAPIConfig:
    """The OpenAPI config: Swagger UI at `/docs`, the document at `/docs/openapi.json|yaml`."""
    swagger = SwaggerRenderPlugin(
        path=["/", "/swagger"],
        js_url=f"{ASSETS_PATH}/{_ASSETS['js']}",
        standalone_preset_js_url=f"{ASSETS_PATH}/{_ASSETS['preset']}",
        css_url=f"{ASSETS_PATH}/{_ASSETS['css']}",
        favicon=f"<link rel='icon' type='image/png' href='{ASSETS_PATH}/{_ASSETS['icon']}'>",
    )
    return OpenAPIConfig(
        title=title,
        version=version,
        description=description,
        path=DOCS_PATH,
        components=Components(security_schemes=dict(security_schemes())),
        render_plugins=[swagger, JsonRenderPlugin(), YamlRenderPlugin()],
    )


def docs_assets() -> Router:
    """The Swagger UI files, read from the installed package (cached by browsers for a day)."""
    return create_static_files_router(
        path=ASSETS_PATH,
        directories=[swagger_ui_path],
        cache_control=None,
        include_in_schema=False,
        name="docs-assets",
    )


__all__ = [
    "API_KEY_SECURITY",
    "ASSETS_PATH",
    "DOCS_PATH",
    "TRACE_HEADER",
    "docs_assets",
    "docs_config",
    "document_trace_ids",
    "trace_header",
]
