"""ng_viewer: browse a rollouts file in the browser, served with a JSON API or written as one self-contained page."""

from nemo_gym.viewer.app import build_app
from nemo_gym.viewer.page import DEFAULT_MAX_HTML_ROWS, render_page, write_html
from nemo_gym.viewer.records import Query, RolloutIndex, ViewerInputError

__all__ = [
    "DEFAULT_MAX_HTML_ROWS",
    "Query",
    "RolloutIndex",
    "ViewerInputError",
    "build_app",
    "render_page",
    "write_html",
]
