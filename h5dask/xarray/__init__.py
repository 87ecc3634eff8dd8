"""The xarray integration: the "h5cloud" backend and ``to_h5cloud``.

``to_h5cloud`` is imported on first use: xarray imports this package when it lists its
backends (for every ``open_dataset``), which must stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .writer import to_h5cloud

__all__ = ["to_h5cloud"]


def __getattr__(name: str) -> Any:
    if name == "to_h5cloud":
        from .writer import to_h5cloud

        return to_h5cloud
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
