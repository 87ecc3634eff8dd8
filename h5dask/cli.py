"""The ``h5dask`` command line: load, ls, info, rm, gc, serve-active, demo.

Exit codes: 0 success (also when the reader of the output goes away early, as
``| head`` does), 1 an h5dask or storage error, 2 bad usage, 3 not found (no such
domain, object or bucket), 4 permission denied, 5 refused: ``rm`` of a folder without
``--recursive``, 130 interrupted. Errors print one line (no traceback) unless ``--debug``
is given (before or after the subcommand).

Examples::

    h5dask load data/tas.nc s3://bucket/home/me/tas.h5
    h5dask ls s3://bucket/home/me/
    h5dask info s3://bucket/home/me/tas.h5 --path /tas
    h5dask rm s3://bucket/home/me/tas.h5
    h5dask gc s3://bucket --delete
"""

from __future__ import annotations

import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .errors import FolderNotEmptyError, H5DaskError, LoadInProgressError, StoragePermissionError
from .process_exit import CleanExitGroup

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_PERMISSION, EXIT_INTERRUPTED = 1, 2, 3, 4, 130
EXIT_REFUSED = 5
#: ``h5dask load`` published its domain(s) without some objects it could not import (each
#: listed as "skipped:"), as rsync's 23 says a transfer was partial; --allow-skips: 0
EXIT_SKIPPED = 6


def parse_storage_options(pairs: tuple[str, ...], endpoint_url: str | None,
                          anon: bool, bucket_root: str | None = None) -> dict[str, Any]:
    """``key=value`` pairs (dotted keys nest: ``client_kwargs.region_name=eu-west-1``)
    into s3fs-style storage_options; values are JSON when they parse as JSON.

    >>> parse_storage_options(("client_kwargs.region_name=eu-west-1", "max_attempts=3"),
    ...                       None, False)
    {'client_kwargs': {'region_name': 'eu-west-1'}, 'max_attempts': 3}
    """
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}",
                                     param_hint="--storage-option")
        try:
            value: Any = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        target = options
        *parents, leaf = key.split(".")
        for p in parents:
            target = target.setdefault(p, {})
        target[leaf] = value
    if endpoint_url:
        options["endpoint_url"] = endpoint_url
    if anon:
        options["anon"] = True
    if bucket_root:
        options["bucket_root"] = bucket_root
    return options


def _storage_params(func: Callable) -> Callable:
    func = click.option(
        "--bucket-root", metavar="DIR",
        help="file:// and plain paths: the directory that is the bucket root (holds db/); "
             "needed when it cannot be told from the path (see README).")(func)
    func = click.option("--anon", is_flag=True, help="Anonymous access (public buckets).")(func)
    func = click.option("--endpoint-url", metavar="URL",
                        help="S3 endpoint (default: AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL).")(func)
    return click.option("--storage-option", "-o", "storage_option", multiple=True,
                        metavar="KEY=VALUE",
                        help="A storage option (s3fs conventions), repeatable.")(func)


class Context:
    def __init__(self, debug: bool = False) -> None:
        self.debug = debug


def _set_debug(ctx: click.Context, _param: click.Parameter, value: bool) -> None:
    if value:
        ctx.ensure_object(Context).debug = True


def _pipe_closed() -> None:
    """The reader of our output has gone (``| head``): stop quietly, as cat does, and
    keep Python from complaining while it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    sys.exit(0)


def _fail(ctx: click.Context, exc: BaseException) -> None:
    if isinstance(exc, BrokenPipeError):
        _pipe_closed()
    if ctx.obj and ctx.obj.debug:
        raise exc
    if isinstance(exc, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    code = EXIT_ERROR
    if isinstance(exc, FolderNotEmptyError | LoadInProgressError):
        code = EXIT_REFUSED
    elif isinstance(exc, FileNotFoundError | KeyError):
        code = EXIT_NOT_FOUND
    elif isinstance(exc, PermissionError | StoragePermissionError):
        code = EXIT_PERMISSION
    message = str(exc) or type(exc).__name__
    for note in getattr(exc, "__notes__", ()):  # what to do next, added on the way up
        message += f" {note}"
    click.echo(f"h5dask: error: {message}", err=True)
    click.echo("(run with --debug for a traceback)", err=True)
    sys.exit(code)


def _guarded(func: Callable) -> Callable:
    """Turn expected exceptions into one-line errors with meaningful exit codes."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        ctx = click.get_current_context()
        try:
            return func(*args, **kwargs)
        except (H5DaskError, OSError, ValueError, KeyError, TypeError,
                KeyboardInterrupt) as exc:
            _fail(ctx, exc)

    # --debug is accepted after the subcommand too (h5dask ls URL --debug)
    return click.option("--debug", is_flag=True, expose_value=False, callback=_set_debug,
                        help="Show tracebacks for errors.")(wrapper)


@click.group(cls=CleanExitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="h5dask")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """h5dask: HDF5 data in object storage (HSDS schema v2) for xarray and dask.

    The store and credentials come from the AWS environment (AWS_ENDPOINT_URL_S3,
    AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ...) or from each command's
    --endpoint-url and -o options. Exit codes: 0 ok, 1 error, 2 bad usage, 3 not found,
    4 permission denied, 5 refused, 6 loaded with objects skipped (load), 130 interrupted.

    \b
    Examples:
      h5dask load tas.nc s3://bucket/home/me/tas.h5
      h5dask ls s3://bucket/home/me/
      h5dask info s3://bucket/home/me/tas.h5 --path /tas
    Then in Python:
      xr.open_dataset("s3://bucket/home/me/tas.h5", engine="h5cloud", chunks={})
    """
    ctx.obj = Context(debug)


# -- load -------------------------------------------------------------------------------
def _parse_chunks(spec: str | None) -> Any:
    if spec is None or spec == "auto":
        return spec
    try:
        if spec.strip().startswith("{"):
            return {k: tuple(v) for k, v in json.loads(spec).items()}
        return tuple(int(x) for x in spec.split(","))
    except (ValueError, TypeError, AttributeError) as exc:
        raise click.BadParameter(
            "use 'auto', a shape like 10,180,360, or JSON {\"var\": [10, 180, 360]}",
            param_hint="--chunks") from exc


def _parse_compression(spec: str | None) -> tuple[str | None, int | None]:
    if spec is None:
        return None, None
    name, _, level = spec.partition(":")
    if level and not (level.isascii() and level.isdigit()):
        raise click.BadParameter("use NAME or NAME:LEVEL, e.g. gzip:4",
                                 param_hint="--compression")
    return name, int(level) if level else None


def _load_targets(sources: tuple[str, ...], url: str) -> list[tuple[str, str]]:
    """(file, domain URL) pairs: one SRC into the domain URL, or each SRC into the folder
    URL (ending in "/") as NAME.h5, as ``cp`` copies into a directory."""
    from .ingest.load import domain_name_for

    if len(sources) == 1:
        return [(sources[0], url)]  # load_file puts it into a folder URL itself
    if not url.endswith("/"):
        raise click.UsageError(
            f"{len(sources)} files need a folder URL ending in '/' (each becomes "
            f"FOLDER/NAME.h5), not the domain URL {url!r}")
    pairs = [(src, url + domain_name_for(src)) for src in sources]
    names = [domain for _, domain in pairs]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise click.UsageError(f"files of the same name would become the same domain: "
                               f"{', '.join(clashes)}; load them into different folders")
    return pairs


@main.command()
@click.argument("src", nargs=-1, required=True)
@click.argument("url")
@click.option("--link", is_flag=True,
              help="Write only metadata; datasets reference the chunks inside SRC "
                   "instead of copying them. SRC in object storage (s3://) makes a domain "
                   "anyone with access to both can read; a local path works too, but then "
                   "the domain is readable only where that path exists (a warning says "
                   "so).")
@click.option("--chunks", metavar="SPEC",
              help="Rechunk: 'auto', a shape like 10,180,360, or JSON {var: shape}.")
@click.option("--compression", metavar="NAME[:LEVEL]",
              help="Recompress: gzip, lz4, zstd, blosclz, ... with an optional level.")
@click.option("--overwrite", is_flag=True, help="Replace an existing domain at URL.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--src-storage-option", multiple=True, metavar="KEY=VALUE",
              help="A storage option for reading SRC, repeatable.")
@click.option("--allow-skips", is_flag=True,
              help="Exit 0 even if some objects could not be imported and were skipped "
                   "(listed as 'skipped:'); without it such a load exits 6.")
@_storage_params
@_guarded
def load(src: tuple[str, ...], url: str, link: bool, chunks: str | None, compression: str | None,
         overwrite: bool, no_progress: bool, src_storage_option: tuple[str, ...],
         allow_skips: bool, storage_option: tuple[str, ...], endpoint_url: str | None,
         anon: bool, bucket_root: str | None) -> None:
    """Import the HDF5/netCDF-4 file SRC into the domain URL (or link it with --link).

    URL names the new domain (s3://bucket/home/me/tas.h5), or a folder ending in "/"
    that receives each SRC as NAME.h5 (several SRC need one). An existing domain is
    refused unless --overwrite is given. netCDF-3 files: convert them first (nccopy -k
    nc4 in.nc out.nc).

    Objects that cannot be imported (a type HSDS cannot hold, a filter without its
    plugin, ...) are skipped and listed; the domain is published without them and the
    exit status is 6, unless --allow-skips is given.

    \b
    Examples:
      h5dask load tas.nc s3://bucket/home/me/tas.h5
      h5dask load --endpoint-url http://minio:9000 -o key=KEY -o secret=SECRET \\
          tas.nc s3://bucket/home/me/tas.h5
      h5dask load runs/*.nc s3://bucket/home/me/runs/
    """
    options = parse_storage_options(storage_option, endpoint_url, anon, bucket_root)
    src_options = parse_storage_options(src_storage_option, None, False) or None
    comp, level = _parse_compression(compression)
    chunk_spec = _parse_chunks(chunks)
    from .errors import LocalLinkWarning
    from .ingest.load import load_file

    skipped: dict[str, int] = {}  # source -> objects skipped
    for source, domain in _load_targets(src, url):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", LocalLinkWarning)
            summary = load_file(source, domain, link=link, chunks=chunk_spec,
                                compression=comp, compression_opts=level,
                                storage_options=options, src_storage_options=src_options,
                                progress=not no_progress, overwrite=overwrite)
        for warning in caught:
            click.echo(f"h5dask: warning: {warning.message}", err=True)
        click.echo(str(summary))
        if not summary.url.startswith(("s3://", "s3a://")):  # a file system: say where
            from .storage import open_location

            root = open_location(domain, options).store.root_url
            click.echo(f"  bucket root: {root} (the domain's objects are in its db/)")
        if summary.skipped:
            skipped[source] = len(summary.skipped)
    if skipped and not allow_skips:
        which = ", ".join(f"{n} of {name}" for name, n in skipped.items())
        click.echo(f"h5dask: {sum(skipped.values())} object(s) skipped ({which}), listed "
                   "above; the rest was loaded. Exit status 6: pass --allow-skips to "
                   "accept skipped objects.", err=True)
        sys.exit(EXIT_SKIPPED)


# -- ls / info ----------------------------------------------------------------------------
def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _tree_lines(f: Any) -> list[str]:
    from .file import Dataset, Group

    lines = [f"/  (group, {len(f)} members, {len(f.attrs)} attributes)"]

    def visit(name: str, obj: Any) -> None:
        depth = name.count("/")
        pad = "  " * (depth + 1)
        leaf = name.rsplit("/", 1)[-1]
        if isinstance(obj, Group):
            lines.append(f"{pad}{leaf}/  (group, {len(obj)} members)")
        elif isinstance(obj, Dataset):
            shape = obj.shape
            size = math.prod(shape or ()) * obj.dtype.itemsize if shape is not None else 0
            chunks = "x".join(map(str, obj.chunks)) if obj.chunks else obj.layout
            comp = f", {obj.compression}" if obj.compression else ""
            lines.append(f"{pad}{leaf}  {obj.dtype} {shape}  chunks {chunks}{comp}  "
                         f"{_human(size)}")
        else:
            lines.append(f"{pad}{leaf}  (committed type {obj.dtype})")

    f.visititems(visit)
    return lines


@main.command(name="ls")
@click.argument("url")
@_storage_params
@_guarded
def ls_command(url: str, storage_option: tuple[str, ...], endpoint_url: str | None,
               anon: bool, bucket_root: str | None) -> None:
    """List the domains under a bucket, folder or prefix, or the tree of one domain."""
    from .admin import list_domains
    from .errors import DomainNotFoundError, NotADomainError
    from .file import File
    from .storage import names_bucket_root

    options = parse_storage_options(storage_option, endpoint_url, anon, bucket_root)
    not_found = None  # says what a URL that names no domain names instead, if asked
    if not names_bucket_root(url):
        try:
            with File(url, "r", storage_options=options) as f:
                for line in _tree_lines(f):
                    click.echo(line)
                return
        except NotADomainError:
            raise
        except DomainNotFoundError as exc:
            not_found = exc
    domains = list_domains(url, options)
    if not domains:  # only now is the hint worth its requests
        hint = f" ({not_found.detail})" if not_found is not None and not_found.detail else ""
        raise FileNotFoundError(f"no domain at or under {url!r}{hint}")
    for d in domains:
        click.echo(d)


@main.command()
@click.argument("url")
@click.option("--path", default="/", show_default=True, help="The object inside the domain.")
@click.option("--json", "as_json", is_flag=True, help="Print the object's JSON metadata.")
@_storage_params
@_guarded
def info(url: str, path: str, as_json: bool, storage_option: tuple[str, ...],
         endpoint_url: str | None, anon: bool, bucket_root: str | None) -> None:
    """Show one object (the root group by default) in detail."""
    from .file import Dataset, File, Group
    from .format.ids import object_prefix
    from .storage import sync

    options = parse_storage_options(storage_option, endpoint_url, anon, bucket_root)
    with File(url, "r", storage_options=options) as f:
        obj = f[path] if path != "/" else f
        meta = f._session.load(obj.id)
        if as_json:
            click.echo(json.dumps(meta.raw, indent=2, default=str))
            return
        click.echo(f"domain:  {f.url}")
        click.echo(f"object:  {path}  id {obj.id}")
        if isinstance(obj, Dataset):
            click.echo(f"dtype:   {obj.dtype}")
            click.echo(f"shape:   {obj.shape}  maxshape {obj.maxshape}")
            click.echo(f"layout:  {obj.layout}  chunks {obj.chunks}")
            click.echo(f"filters: {[item.get('name', item.get('class')) for item in obj.filters]}")
            click.echo(f"fill:    {show_value(obj.fillvalue)}")
            if obj._meta.layout.file_uri:
                click.echo(f"linked:  chunks inside {obj._meta.layout.file_uri}")
            keys = sync(f._session.store.list(object_prefix(obj.id)))
            stored = [k for k in keys if not k.endswith(".json")]
            if obj.chunks:
                total = math.prod(-(-s // c) for s, c in zip(obj.shape, obj.chunks))
                click.echo(f"chunks:  {len(stored)} of {total} stored")
        elif isinstance(obj, Group):
            click.echo(f"members: {', '.join(obj) or '(none)'}")
            for uri in _linked_files(obj):
                click.echo(f"linked:  chunks inside {uri}")
        for name in obj.attrs:
            try:
                shown = show_value(obj.attrs[name])
            except H5DaskError as exc:
                shown = f"<{exc}>"
            click.echo(f"  @{name} = {shown}"[:200])


def show_value(value: Any, max_items: int = 20) -> str:
    """A value as a user reads it: strings as text, small arrays as lists, numbers plain.

    >>> import numpy as np
    >>> show_value(np.bytes_(b"historical")), show_value(np.array([0.0])), show_value(np.int32(3))
    ('"historical"', '[0.0]', '3')
    """
    import numpy as np

    def plain(v: Any) -> Any:
        if isinstance(v, bytes | np.bytes_):
            return bytes(v).decode("utf-8", errors="backslashreplace")
        if isinstance(v, np.generic):
            return v.item()
        return v

    value = plain(value)
    if isinstance(value, np.ndarray):
        items = [plain(v) for v in value.ravel()[:max_items].tolist()]
        if value.ndim == 1 and value.size <= max_items:
            return json.dumps(items, ensure_ascii=False, default=str)
        shown = json.dumps(items, ensure_ascii=False, default=str)[1:-1]
        more = ", ..." if value.size > max_items else ""
        return f"array {value.dtype} {value.shape}: [{shown}{more}]"
    if isinstance(value, str | int | float | bool | list | dict) or value is None:
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _linked_files(group: Any) -> list[str]:
    """The files whose chunks the datasets under ``group`` reference (linked domains)."""
    from .file import Dataset

    found: set[str] = set()

    def visit(_name: str, obj: Any) -> None:
        if isinstance(obj, Dataset) and obj._meta.layout.file_uri:
            found.add(obj._meta.layout.file_uri)

    group.visititems(visit)
    return sorted(found)


# -- rm / gc -------------------------------------------------------------------------------
@main.command()
@click.argument("url")
@click.option("--recursive", "-r", is_flag=True,
              help="Remove every domain (and folder) under a folder or prefix.")
@click.option("--dry-run", is_flag=True, help="Only print what would be removed.")
@_storage_params
@_guarded
def rm(url: str, recursive: bool, dry_run: bool, storage_option: tuple[str, ...],
       endpoint_url: str | None, anon: bool, bucket_root: str | None) -> None:
    """Remove the domain URL: its .domain.json and every object of it in db/.

    Asks nothing; prints what it removed. A folder or prefix needs --recursive (else
    exit 5); a linked domain's source file is left alone.
    """
    from .admin import rm as remove

    options = parse_storage_options(storage_option, endpoint_url, anon, bucket_root)
    click.echo(str(remove(url, recursive=recursive, dry_run=dry_run,
                          storage_options=options)))


@main.command()
@click.argument("bucket_url", metavar="BUCKET_URL")
@click.option("--delete", is_flag=True, help="Delete the orphaned objects found.")
@click.option("--min-age", default=3600.0, show_default=True, type=float,  # admin's default
              metavar="SECONDS",
              help="Only objects whose prefix was last written longer ago than this, "
                   "by the store's clock (protects a load in progress). A prefix a running "
                   "load holds (its lease is live) is always kept.")
@_storage_params
@_guarded
def gc(bucket_url: str, delete: bool, min_age: float, storage_option: tuple[str, ...],
       endpoint_url: str | None, anon: bool, bucket_root: str | None) -> None:
    """Find objects in BUCKET_URL's db/ that no domain references (an interrupted load,
    a replaced domain) and, with --delete, remove them.

    BUCKET_URL is the bucket root: s3://bucket, or the directory holding db/.
    """
    from .admin import gc as collect

    options = parse_storage_options(storage_option, endpoint_url, anon, bucket_root)
    click.echo(str(collect(bucket_url, delete=delete, min_age=min_age,
                           storage_options=options)))


# -- serve-active / demo ------------------------------------------------------------------
@main.command(name="serve-active")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--allow-upstream", multiple=True, required=True, metavar="ORIGIN",
              help="An object-store origin the server may read, e.g. "
                   "http://127.0.0.1:9000 (repeatable).")
@click.option("--max-object-size", default=64 * 2**20, show_default=True, type=int,
              help="Largest object (and decompressed chunk) in bytes.")
@click.option("--max-in-flight", default=8, show_default=True, type=int,
              help="Requests reduced at once; more wait in a queue.")
@click.option("--max-queued", default=128, show_default=True, type=int,
              help="Requests that wait for an in-flight slot; more get 503.")
@click.option("--queue-timeout", default=60.0, show_default=True, type=float,
              metavar="SECONDS", help="Longest wait for an in-flight slot (503 after it).")
@click.option("--body-timeout", default=10.0, show_default=True, type=float, metavar="SECONDS",
              help="Time a client has to send its whole request body; after it the "
                   "answer is 400 RequestTimeout.")
@click.option("--max-object-reads", default=8, show_default=True, type=int,
              help="Objects read and reduced at once, each into a reused buffer; the "
                   "other requests in flight wait for one.")
@click.option("--upstream-route", multiple=True, metavar="NAMED=FETCHED",
              help="Fetch objects whose URL names origin NAMED from origin FETCHED (an "
                   "allowed one, e.g. the store's internal address) instead (repeatable).")
@click.option("--log-level", default="INFO", show_default=True)
@_guarded
def serve_active(host: str, port: int, allow_upstream: tuple[str, ...], max_object_size: int,
                 max_in_flight: int, max_queued: int, queue_timeout: float,
                 body_timeout: float, max_object_reads: int,
                 upstream_route: tuple[str, ...], log_level: str) -> None:
    """Run the active-storage server (Reductionist v2 API)."""
    from .active.server import serve
    from .active.upstream import AllowList, Routes

    try:
        Routes(upstream_route, AllowList(allow_upstream))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    serve(host, port, list(allow_upstream), max_object_size, max_in_flight, log_level,
          body_timeout=body_timeout, upstream_routes=upstream_route,
          max_object_reads=max_object_reads, max_queued=max_queued,
          queue_timeout=queue_timeout)


@main.command()
@click.option("--size-mib", default=256, show_default=True, type=int,
              help="Size of the synthetic climate dataset.")
@click.option("--output", default="demo-output", show_default=True,
              help="Directory for the report and the PNG map.")
@click.option("--workers", default=2, show_default=True, type=int)
@_guarded
def demo(size_mib: int, output: str, workers: int) -> None:
    """Embedded SeaweedFS + active storage: ingest, analyse on a local cluster, push down."""
    from .demo import run_demo

    run_demo(size_mib=size_mib, output=output, workers=workers)


if __name__ == "__main__":  # pragma: no cover
    main()
