"""The HSDS object-storage schema v2: ids and keys, types, dataspaces, values,
filters and the chunk grid. Pure functions and small classes; no I/O here."""
