"""The index of what users of neighbouring systems (h5pyd/HSDS, xarray, zarr, kerchunk,
PyActiveStorage) hit, as reported in their issue trackers, and the tests that prove
h5dask does not. Each row names the tests that fail if h5dask had the problem; the test
below keeps the index true to the test files.

1. dask floods the server ("Connection pool is full"); threaded slower than serial
   (HDFGroup/h5pyd#31, h5pyd PR #167)
2. walking the metadata tree costs one GET per object (h5pyd#25, h5pyd#259)
3. ingest is slow, sequential and fragile; an interrupted upload starts over
   (h5pyd#258, hsds#329)
4. HSDS-layout data without a server; shared stores throttle with 503 and 429
   (NatLabRockies/rex#112, h5pyd#70, h5pyd#115, hsds#94)
5. a filter the reader lacks makes data unreadable (hsds#76, h5pyd#128,
   pangeo-data/benchmarking#6)
6. opening cloud data without consolidated metadata is unusably slow (pydata/xarray#5251,
   xarray#10122)
7. too many requests per chunk read (zarr-python#1758, #3199, PR #3004)
8. one task per chunk makes graphs too big (pydata/xarray#6036, pangeo-data/pangeo#266)
9. remote HDF5 through fsspec cannot be pickled for distributed, needs cache tuning
   (xarray#10712, xarray#4591, xarray PR #11216, s3fs#677)
10. truncated reads surface as cryptic decompressor errors instead of being retried
    (zarr-developers/numcodecs#810)
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent

PROOFS: dict[int, list[str]] = {
    1: ["reliability/test_request_bounds.py::"
        "test_many_dask_threads_keep_requests_in_flight_within_max_concurrency",
        "reliability/test_request_bounds.py::"
        "test_threaded_read_makes_the_requests_a_serial_read_makes",
        "storage/test_stores.py::test_blocking_and_async_gets_share_one_bound",
        "storage/test_stores.py::test_get_many_is_concurrent_and_bounded",
        "test_chunkio.py::test_a_block_keeps_a_window_of_gets_in_flight"],
    2: ["test_file.py::test_walking_a_tree_costs_the_same_requests_for_2_or_24_groups",
        "xarray/test_open_listing.py::"
        "test_opening_a_tree_costs_the_same_round_trips_for_2_or_24_groups",
        "test_chunkio.py::test_metadata_reads"],
    3: ["ingest/test_load.py::test_chunks_are_copied_with_max_workers_in_flight",
        "ingest/test_load.py::test_progress_bar_and_summary_numbers",
        "ingest/test_resume.py::"
        "test_a_killed_load_run_again_resumes_without_uploading_what_is_stored",
        "ingest/test_resume.py::"
        "test_a_load_of_a_changed_file_never_keeps_the_chunks_of_the_old_one",
        "ingest/test_resume.py::"
        "test_a_load_that_the_store_fails_keeps_its_chunks_for_the_next_run",
        "reliability/test_crash_consistency.py::test_kill_during_load"],
    4: ["interop/test_hsds_to_h5dask.py::test_domain_written_by_hsds_reads_through_h5dask",
        "reliability/test_request_bounds.py::"
        "test_throttling_is_retried_with_backoff_until_it_passes",
        "reliability/test_request_bounds.py::"
        "test_throttling_past_the_retry_budget_names_the_chunk_object",
        "reliability/test_faults.py::test_permanent_fault_names_object_and_tries",
        "storage/test_stores.py::test_backoff_is_bounded"],
    5: ["format/test_filters.py::test_bitshuffle_both_forms",
        "format/test_filters.py::test_fletcher32_matches_hdf5",
        "format/test_filters.py::test_hsds_interop",
        "ingest/test_native_filters.py::test_hdf5_native_decode_matches_h5py",
        "ingest/test_plugin_filters.py::"
        "test_copy_has_h5py_values_and_the_hsds_filter_of_the_same_name",
        "ingest/test_plugin_filters.py::test_link_keeps_hdf5s_chunks_and_reads_them",
        "interop/test_plugin_filters_hsds.py::"
        "test_hsds_serves_the_copy_of_every_plugin_filter"],
    6: ["xarray/test_open_listing.py::test_first_open_lists_instead_of_fetching_each_object",
        "xarray/test_open_round_trips.py::test_consolidated_open_is_two_round_trips",
        "xarray/test_open_round_trips.py::"
        "test_without_consolidated_coordinates_come_in_one_round_trip",
        "reliability/test_bombs.py::test_opening_2_to_the_22_chunks_costs_metadata_not_chunks"],
    7: ["reliability/test_request_bounds.py::"
        "test_threaded_read_makes_the_requests_a_serial_read_makes",
        "xarray/test_task_graph.py::test_one_block_costs_one_chunk_get",
        "test_chunkio.py::test_each_chunk_fetched_once",
        "test_readahead.py::test_full_read_is_exact_and_reads_each_chunk_once"],
    8: ["xarray/test_task_graph.py::test_a_variable_of_10_to_the_5_chunks_costs_bytes_per_task",
        "xarray/test_distributed.py::test_task_payload_is_small",
        "test_chunkio.py::test_array_source_pickles_small_and_reads"],
    9: ["xarray/test_distributed.py::test_an_opened_dataset_pickles_whole_and_reads_on_a_worker",
        "xarray/test_distributed.py::test_reduction_reads_every_chunk_in_workers_none_in_client",
        "storage/test_stores.py::test_store_pickles_to_the_same_instance"],
    10: ["reliability/test_faults.py::test_permanent_fault_names_object_and_tries",
         "reliability/test_faults.py::test_file_write_and_read_survive_faults",
         "reliability/test_hostile_input.py::test_every_size_change_of_every_chunk_is_detected",
         "test_chunkio.py::test_a_chunk_object_larger_than_any_encoding_is_an_error_not_cut"],
}


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {node.name for node in tree.body
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


@pytest.mark.parametrize("row", sorted(PROOFS))
def test_every_row_names_tests_that_exist(row: int) -> None:
    for node_id in PROOFS[row]:
        file, _, name = node_id.partition("::")
        assert name in _test_functions(TESTS / file), f"row {row}: {node_id} is gone"
