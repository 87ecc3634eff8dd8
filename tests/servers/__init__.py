"""Real servers started by the test fixtures (HSDS; SeaweedFS lives in h5dask.services)."""
