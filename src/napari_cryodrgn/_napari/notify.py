"""User-facing messages: napari notifications that say what is wrong and what to do."""

from __future__ import annotations

from napari.utils.notifications import show_error, show_info, show_warning

__all__ = ["show_error", "show_info", "show_warning", "user_error"]


def user_error(err: BaseException, what: str = "") -> None:
    """Show an exception from the core as one clear error notification (no traceback)."""
    prefix = f"{what}: " if what else ""
    show_error(f"{prefix}{err}")
