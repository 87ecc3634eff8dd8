"""The xarray integration: the "h5cloud" backend and ``to_h5cloud``."""

from .writer import to_h5cloud

__all__ = ["to_h5cloud"]
