"""`/docs`: the OpenAPI document and a Swagger UI whose assets come from an installed package.

No CDN: the page, its script, its stylesheet and its icon are all served by the
gateway itself (from `swagger-ui-bundle-v2`), so the docs work on a machine with
no internet access and leak no visitor to a third party.
"""

from __future__ import annotations

from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import JsonRenderPlugin, SwaggerRenderPlugin, YamlRenderPlugin
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


__all__ = ["ASSETS_PATH", "DOCS_PATH", "docs_assets", "docs_config"]
