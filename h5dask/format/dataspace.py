"""HSDS dataspaces: simple (with maxdims/unlimited), scalar and null.

>>> ds = Dataspace.from_json({"class": "H5S_SIMPLE", "dims": [4, 5], "maxdims": [0, 5]})
>>> ds.shape, ds.maxshape
((4, 5), (None, 5))
>>> Dataspace.from_json({"class": "H5S_SCALAR"}).shape
()
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

UNLIMITED = "H5S_UNLIMITED"


@dataclass(frozen=True)
class Dataspace:
    """``shape`` is None for a null dataspace; ``maxshape`` entries None are unlimited."""

    shape: tuple[int, ...] | None
    maxshape: tuple[int | None, ...] | None = None

    @property
    def is_null(self) -> bool:
        return self.shape is None

    @property
    def is_scalar(self) -> bool:
        return self.shape == ()

    @classmethod
    def from_json(cls, obj: Any) -> Dataspace:
        """Parse a ``shape`` JSON object; raises ValueError naming what is wrong."""
        if isinstance(obj, list):  # a bare dims list, as some writers give it
            obj = {"class": "H5S_SIMPLE", "dims": obj}
        if not isinstance(obj, dict):
            raise ValueError(f"shape must be an object, got {type(obj).__name__}")
        cls_name = obj.get("class")
        if cls_name == "H5S_NULL":
            return cls(None)
        if cls_name == "H5S_SCALAR":
            return cls((), ())
        if cls_name != "H5S_SIMPLE":
            raise ValueError(f"unknown dataspace class {cls_name!r}")
        dims = obj.get("dims")
        if not isinstance(dims, list) or not all(
            isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in dims
        ):
            raise ValueError(f"shape dims must be a list of non-negative integers, got {dims!r}")
        maxdims = obj.get("maxdims")
        if maxdims is None:
            return cls(tuple(dims), tuple(dims))
        if not isinstance(maxdims, list) or len(maxdims) != len(dims):
            raise ValueError(f"maxdims {maxdims!r} does not match dims {dims!r}")
        maxshape: list[int | None] = []
        for d, m in zip(dims, maxdims):
            if m in (0, UNLIMITED, None):
                maxshape.append(None)
            elif isinstance(m, int) and m >= d:
                maxshape.append(m)
            else:
                raise ValueError(f"maxdims {maxdims!r} smaller than dims {dims!r}")
        return cls(tuple(dims), tuple(maxshape))

    def to_json(self) -> dict:
        if self.shape is None:
            return {"class": "H5S_NULL"}
        if self.shape == ():
            return {"class": "H5S_SCALAR"}
        out: dict[str, Any] = {"class": "H5S_SIMPLE", "dims": list(self.shape)}
        if self.maxshape is not None and tuple(self.maxshape) != tuple(self.shape):
            out["maxdims"] = [UNLIMITED if m is None else m for m in self.maxshape]
        return out
