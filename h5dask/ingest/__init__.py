"""Getting HDF5/netCDF-4 files into domains: copied (load) or linked in place."""
