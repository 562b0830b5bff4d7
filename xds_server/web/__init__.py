"""The web view on the debug address: the mesh's graph, live traffic, sync state, pushes.

`WebView(plane).setup(app)` adds its routes to the debug server (view.py); the page
itself is static, in `static/`, shipped as package data.
"""

from xds_server.web.view import WebView

__all__ = ["WebView"]
