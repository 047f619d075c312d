"""The browser file manager (see :mod:`gateway.webui.app`)."""

from gateway.webui.app import UI_PREFIX, WebUI

__all__ = ["UI_PREFIX", "WebUI"]
