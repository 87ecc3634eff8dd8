"""The ``h5dask`` command line: load, ls, info, serve-active, demo.

Exit codes: 0 success, 1 an h5dask or storage error, 2 bad usage, 3 not found,
4 permission denied, 130 interrupted. Errors print one line (no traceback) unless
``--debug`` is given.

Examples::

    h5dask load data/tas.nc s3://bucket/home/me/tas.h5
    h5dask ls s3://bucket/home/me/
    h5dask info s3://bucket/home/me/tas.h5 --path /tas
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from typing import Any

import click

from . import __version__
from .errors import H5DaskError, StoragePermissionError
from .process_exit import CleanExitGroup

EXIT_ERROR, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_PERMISSION, EXIT_INTERRUPTED = 1, 2, 3, 4, 130


def parse_storage_options(pairs: tuple[str, ...], endpoint_url: str | None,
                          anon: bool) -> dict[str, Any]:
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
    return options


def _storage_params(func: Callable) -> Callable:
    func = click.option("--anon", is_flag=True, help="Anonymous access (public buckets).")(func)
    func = click.option("--endpoint-url", metavar="URL",
                        help="S3 endpoint (default: AWS_ENDPOINT_URL_S3/AWS_ENDPOINT_URL).")(func)
    return click.option("--storage-option", "-o", "storage_option", multiple=True,
                        metavar="KEY=VALUE",
                        help="A storage option (s3fs conventions), repeatable.")(func)


class Context:
    def __init__(self, debug: bool) -> None:
        self.debug = debug


def _fail(ctx: click.Context, exc: BaseException) -> None:
    if ctx.obj and ctx.obj.debug:
        raise exc
    if isinstance(exc, KeyboardInterrupt):
        click.echo("interrupted", err=True)
        sys.exit(EXIT_INTERRUPTED)
    code = EXIT_ERROR
    if isinstance(exc, FileNotFoundError | KeyError):
        code = EXIT_NOT_FOUND
    elif isinstance(exc, PermissionError | StoragePermissionError):
        code = EXIT_PERMISSION
    message = str(exc) or type(exc).__name__
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

    return wrapper


@click.group(cls=CleanExitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="h5dask")
@click.option("--debug", is_flag=True, help="Show tracebacks for errors.")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """h5dask: HDF5 data in object storage (HSDS schema v2) for xarray and dask."""
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
    if level and not level.isdigit():
        raise click.BadParameter("use NAME or NAME:LEVEL, e.g. gzip:4",
                                 param_hint="--compression")
    return name, int(level) if level else None


@main.command()
@click.argument("src")
@click.argument("url")
@click.option("--link", is_flag=True,
              help="Write only metadata; datasets reference the chunks inside SRC "
                   "(SRC must be in object storage).")
@click.option("--chunks", metavar="SPEC",
              help="Rechunk: 'auto', a shape like 10,180,360, or JSON {var: shape}.")
@click.option("--compression", metavar="NAME[:LEVEL]",
              help="Recompress: gzip, lz4, zstd, blosclz, ... with an optional level.")
@click.option("--overwrite", is_flag=True, help="Replace an existing domain at URL.")
@click.option("--no-progress", is_flag=True, help="No progress bar.")
@click.option("--src-storage-option", multiple=True, metavar="KEY=VALUE",
              help="A storage option for reading SRC, repeatable.")
@_storage_params
@_guarded
def load(src: str, url: str, link: bool, chunks: str | None, compression: str | None,
         overwrite: bool, no_progress: bool, src_storage_option: tuple[str, ...],
         storage_option: tuple[str, ...], endpoint_url: str | None, anon: bool) -> None:
    """Import the HDF5/netCDF-4 file SRC into the domain URL (or link it with --link)."""
    options = parse_storage_options(storage_option, endpoint_url, anon)
    src_options = parse_storage_options(src_storage_option, None, False) or None
    comp, level = _parse_compression(compression)
    chunk_spec = _parse_chunks(chunks)
    from .ingest.load import load_file

    summary = load_file(src, url, link=link, chunks=chunk_spec, compression=comp,
                        compression_opts=level, storage_options=options,
                        src_storage_options=src_options, progress=not no_progress,
                        overwrite=overwrite)
    click.echo(str(summary))


# -- ls / info ----------------------------------------------------------------------------
def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def _list_domains(url: str, options: dict) -> list[str]:
    from .storage import open_location, sync

    location = open_location(url.rstrip("/") + "/.probe", options)
    prefix = location.domain.rsplit("/", 1)[0] if "/" in location.domain else ""
    keys = sync(location.store.list(prefix))
    found = []
    for key in keys:
        if key.endswith("/.domain.json"):
            data = sync(location.store.get(key, kind="metadata"))
            try:
                if data is not None and json.loads(data).get("root"):
                    found.append(f"{location.store.root_url}/{key[:-len('/.domain.json')]}")
            except (json.JSONDecodeError, AttributeError):
                continue
    return found


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
               anon: bool) -> None:
    """List the domains under a prefix, or the tree of one domain."""
    from .errors import DomainNotFoundError
    from .file import File

    options = parse_storage_options(storage_option, endpoint_url, anon)
    try:
        with File(url, "r", storage_options=options) as f:
            for line in _tree_lines(f):
                click.echo(line)
            return
    except DomainNotFoundError:
        pass
    domains = _list_domains(url, options)
    if not domains:
        raise FileNotFoundError(f"no domain at or under {url!r}")
    for d in domains:
        click.echo(d)


@main.command()
@click.argument("url")
@click.option("--path", default="/", show_default=True, help="The object inside the domain.")
@click.option("--json", "as_json", is_flag=True, help="Print the object's JSON metadata.")
@_storage_params
@_guarded
def info(url: str, path: str, as_json: bool, storage_option: tuple[str, ...],
         endpoint_url: str | None, anon: bool) -> None:
    """Show one object (the root group by default) in detail."""
    from .file import Dataset, File, Group
    from .format.ids import object_prefix
    from .storage import sync

    options = parse_storage_options(storage_option, endpoint_url, anon)
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
            click.echo(f"fill:    {obj.fillvalue!r}")
            keys = sync(f._session.store.list(object_prefix(obj.id)))
            stored = [k for k in keys if not k.endswith(".json")]
            if obj.chunks:
                total = math.prod(-(-s // c) for s, c in zip(obj.shape, obj.chunks))
                click.echo(f"chunks:  {len(stored)} of {total} stored")
        elif isinstance(obj, Group):
            click.echo(f"members: {', '.join(obj) or '(none)'}")
        for name in obj.attrs:
            try:
                value = obj.attrs[name]
            except H5DaskError as exc:
                value = f"<{exc}>"
            click.echo(f"  @{name} = {value!r}"[:200])


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
              help="Requests reduced at once; more get 503.")
@click.option("--body-timeout", default=10.0, show_default=True, type=float, metavar="SECONDS",
              help="Time a client has to send its whole request body; after it the "
                   "answer is 400 RequestTimeout.")
@click.option("--log-level", default="INFO", show_default=True)
@_guarded
def serve_active(host: str, port: int, allow_upstream: tuple[str, ...], max_object_size: int,
                 max_in_flight: int, body_timeout: float, log_level: str) -> None:
    """Run the active-storage server (Reductionist v2 API)."""
    from .active.server import serve

    serve(host, port, list(allow_upstream), max_object_size, max_in_flight, log_level,
          body_timeout=body_timeout)


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
