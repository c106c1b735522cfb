"""Where the widget, templates and static files are: inside the installed wheel, or in the source tree."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
_SOURCE_TREE = _PACKAGE.parent.parent  # backend/feedback_bridge -> repository root (editable installs)


def resource_dir(name: str) -> Path:
    """``widget``, ``templates`` or ``static``: the copy packed in the wheel, else the repository's."""
    for candidate in (_PACKAGE / "assets" / name, _SOURCE_TREE / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"feedback-bridge cannot find its {name!r} folder; is the package installed whole?")
