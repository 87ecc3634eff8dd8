"""Resolve S3 settings from storage_options, the AWS environment, the credential chain.

Precedence, setting by setting: explicit ``storage_options`` (s3fs conventions) >
standard AWS environment variables > the AWS profile (its region and ``endpoint_url``
in the shared config file) and botocore's credential chain (profiles, shared files,
container and instance credentials) > defaults.

>>> s = resolve_s3_settings({"key": "k", "secret": "s", "endpoint_url": "http://127.0.0.1:9000"},
...                         environ={})
>>> (s.endpoint, s.region, s.addressing_style, s.anon)
('http://127.0.0.1:9000', 'us-east-1', 'path', False)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

from ..errors import StorageOptionsError
from .settings import TUNING_OPTIONS, refuse_unknown

__all__ = ["S3Settings", "TUNING_OPTIONS", "masked_key_id", "resolve_s3_settings"]


def masked_key_id(key: str) -> str:
    """An access key id as the AWS CLI shows it, its last 4 characters only (none of a
    short one): enough to tell two keys apart, never the key itself.

    >>> masked_key_id("AKIAIOSFODNN7EXAMPLE")
    '****************MPLE'
    >>> masked_key_id("h5dask")
    '****'
    """
    return "*" * (len(key) - 4) + key[-4:] if len(key) >= 12 else "****"


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to talk to one S3 endpoint; picklable, hashable.

    ``key``, ``secret`` and ``token`` are left out of ``repr`` so they never reach logs.
    """

    endpoint: str | None = None
    region: str = "us-east-1"
    key: str | None = field(default=None, repr=False)
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    anon: bool = False
    addressing_style: str = "virtual"
    ca_bundle: str | None = None
    verify: bool = True
    requester_pays: bool = False
    credential_source: str = "none"


#: the botocore client arguments and config names (s3fs's ``client_kwargs`` and
#: ``config_kwargs``) h5dask's S3 client uses; any other would be silently ignored
CLIENT_KWARGS = frozenset({"endpoint_url", "region_name", "aws_access_key_id",
                           "aws_secret_access_key", "aws_session_token", "verify"})
CONFIG_KWARGS_S3 = frozenset({"addressing_style"})


def _client_kwargs(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return options.get("client_kwargs") or {}


def _refuse_unknown_nested(options: Mapping[str, Any]) -> None:
    """Refuse the ``client_kwargs``/``config_kwargs`` names h5dask's S3 client (obstore,
    not botocore) would ignore, naming them and what to use."""
    def unknown(where: str, given: Any, valid: frozenset[str], instead: str = "") -> None:
        if not isinstance(given, Mapping):
            raise StorageOptionsError(f"storage_options {where} must be a dict, not "
                                      f"{type(given).__name__}")
        names = sorted(set(given) - valid)
        if names:
            raise StorageOptionsError(
                f"storage_options {where} {names} are not used by h5dask's S3 client; "
                f"valid: {sorted(valid)}{instead}")

    unknown("client_kwargs", options.get("client_kwargs") or {}, CLIENT_KWARGS)
    config = options.get("config_kwargs") or {}
    unknown("config_kwargs", config, frozenset({"s3"}),
            "; timeouts and retries are the storage_options timeout, connect_timeout, "
            "max_attempts and retry_base_delay")
    unknown("config_kwargs.s3", config.get("s3") or {}, CONFIG_KWARGS_S3)


def _first(*values: Any) -> Any:
    for v in values:
        if v not in (None, ""):
            return v
    return None


def _check_endpoint(endpoint: Any, origin: str) -> None:
    """An endpoint is an http(s) URL with a host (obstore panics on one without a
    scheme)."""
    parts = urlsplit(endpoint) if isinstance(endpoint, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise StorageOptionsError(
            f"S3 endpoint {endpoint!r} (from {origin}) is not an http(s) URL with a host: "
            "give e.g. http://127.0.0.1:9000 or https://s3.example.org")


_YES, _NO = ("true", "yes", "on", "1"), ("false", "no", "off", "0", "")


def _flag(options: Mapping[str, Any], name: str) -> bool:
    """A yes/no option, also as a config file writes it ("false" is false)."""
    value = options.get(name)
    if value is None:
        return False
    if isinstance(value, bool | int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _YES + _NO:
        return value.strip().lower() in _YES
    raise StorageOptionsError(f"storage_options {name}={value!r} is not a yes/no value: "
                              "give true or false")


def _is_ip_address(url: str) -> bool:
    try:
        ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class _ProfileSettings:
    """What an AWS profile (shared config and credentials files) and the rest of
    botocore's credential chain say about S3."""

    key: str | None = None
    secret: str | None = None
    token: str | None = None
    region: str | None = None
    endpoint: str | None = None
    ignore_configured_endpoints: bool = False


#: what the profile files said, for an open that needs no credentials from the chain:
#: (profile, the AWS_* environment, the files' paths and mtimes) -> settings
_profile_cache: dict[tuple, _ProfileSettings] = {}


def _profile_files_state() -> tuple:
    """The AWS_* environment and the shared files' modification times: what botocore's
    region and endpoint_url depend on (an edit of a file is seen at the next open)."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith("AWS_")))
    files = []
    for var, default in (("AWS_CONFIG_FILE", "~/.aws/config"),
                         ("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials")):
        path = os.path.expanduser(os.environ.get(var) or default)
        try:
            files.append((path, os.stat(path).st_mtime_ns))
        except OSError:
            files.append((path, None))
    return env, tuple(files)


def _profile_settings(profile: str | None, origin: str, credentials: bool) -> _ProfileSettings:
    """:func:`_read_profile`, remembered while the files and environment stay the same
    when no credentials are asked for (botocore takes about 10 ms per read, on every open
    otherwise); the credential chain is asked every time (its keys may be temporary)."""
    if credentials:
        return _read_profile(profile, origin, credentials)
    state = (profile, origin, _profile_files_state())
    found = _profile_cache.get(state)
    if found is None:
        found = _profile_cache[state] = _read_profile(profile, origin, credentials)
    return found


def _read_profile(profile: str | None, origin: str, credentials: bool) -> _ProfileSettings:
    """Ask botocore for the profile's region and endpoint (its ``services`` section's s3
    ``endpoint_url``, else its own ``endpoint_url``) and, when
    ``credentials``, the credential chain's keys."""
    try:
        import botocore.session
        from botocore.exceptions import ProfileNotFound
    except ImportError:  # pragma: no cover - botocore is a dependency
        return _ProfileSettings()
    session = botocore.session.Session(profile=profile) if profile else botocore.session.Session()
    try:
        scoped = session.get_scoped_config()
        services = session.full_config.get("services", {}).get(scoped.get("services"), {})
        found = _ProfileSettings(
            region=session.get_config_variable("region"),
            endpoint=_first((services.get("s3") or {}).get("endpoint_url"),
                            scoped.get("endpoint_url")),
            ignore_configured_endpoints=bool(session.get_config_variable(
                "ignore_configured_endpoint_urls")))
        creds = session.get_credentials() if credentials else None
    except ProfileNotFound:
        raise StorageOptionsError(
            f"AWS profile {profile!r} (from {origin}) is not defined in "
            f"{session.get_config_variable('config_file')} or "
            f"{session.get_config_variable('credentials_file')}; profiles defined there: "
            f"{sorted(session.available_profiles)}. Name one of them, or set "
            "AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE to the files that define it"
        ) from None
    if creds is None:
        return found
    frozen = creds.get_frozen_credentials()
    return replace(found, key=frozen.access_key, secret=frozen.secret_key, token=frozen.token)


def resolve_s3_settings(
    options: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> S3Settings:
    """Resolve :class:`S3Settings` from s3fs-style ``options`` and the environment.

    Each setting comes from the first that gives it: ``options``, the ``AWS_*``
    environment variables, the AWS profile (``options["profile"]``, else
    ``AWS_PROFILE``, else the default one: its region and ``endpoint_url``, and the
    credential chain), the defaults. Keys in the environment
    beat a profile named by ``AWS_PROFILE`` (as in the AWS SDKs), not one named in
    ``options``.
    """
    options = dict(options or {})
    refuse_unknown(options, "s3")  # the tuning ones are the store's: ignored here
    _refuse_unknown_nested(options)
    env = os.environ if environ is None else environ
    ck = _client_kwargs(options)
    s3_config = ((options.get("config_kwargs") or {}).get("s3") or {})

    explicit_endpoint = _first(options.get("endpoint_url"), ck.get("endpoint_url"))
    env_endpoint = _first(env.get("AWS_ENDPOINT_URL_S3"), env.get("AWS_ENDPOINT_URL"))
    anon = _flag(options, "anon")
    key = _first(options.get("key"), ck.get("aws_access_key_id"))
    secret = _first(options.get("secret"), ck.get("aws_secret_access_key"))
    token = _first(options.get("token"), ck.get("aws_session_token"))
    source = "storage_options" if key else "none"
    if not anon and not key and not options.get("profile") and env.get("AWS_ACCESS_KEY_ID"):
        key = env.get("AWS_ACCESS_KEY_ID")
        secret = env.get("AWS_SECRET_ACCESS_KEY")
        token = env.get("AWS_SESSION_TOKEN")
        source = "environment"
    explicit_region = _first(options.get("region_name"), options.get("region"),
                             ck.get("region_name"), env.get("AWS_REGION"),
                             env.get("AWS_DEFAULT_REGION"))
    style = _first(s3_config.get("addressing_style"), options.get("addressing_style"))

    want_credentials = not anon and not key
    profile = _ProfileSettings()
    if want_credentials or explicit_endpoint is None or explicit_region is None:
        # the profile is read only for what nothing more explicit gave (botocore takes
        # about 10 ms to read its files)
        origin = "storage_options profile" if options.get("profile") else "AWS_PROFILE"
        profile = _profile_settings(_first(options.get("profile"), env.get("AWS_PROFILE")),
                                    origin, want_credentials)
    if want_credentials:
        key, secret, token = profile.key, profile.secret, profile.token
        source = "credential chain" if key else "none"
    if key and not secret and not anon:
        raise StorageOptionsError(f"an S3 access key was given ({source}) without its secret: "
                                  "give both, or neither")

    endpoint, endpoint_origin = explicit_endpoint, "storage_options"
    if endpoint is None and not profile.ignore_configured_endpoints:
        endpoint = _first(env_endpoint, profile.endpoint)
        endpoint_origin = next((name for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
                                if env.get(name)), "the AWS profile")
    if endpoint is not None:
        _check_endpoint(endpoint, endpoint_origin)
    use_ssl = options.get("use_ssl") is None or _flag(options, "use_ssl")
    if endpoint is not None and not use_ssl and endpoint.startswith("https:"):
        endpoint = "http:" + endpoint[len("https:"):]
    region = _first(explicit_region, profile.region, "us-east-1")
    if style in (None, "auto"):
        style = "path" if endpoint else "virtual"
    if style not in ("path", "virtual"):
        raise StorageOptionsError(
            f"addressing_style must be 'path', 'virtual' or 'auto', not {style!r}")
    if style == "virtual" and endpoint is not None and _is_ip_address(endpoint):
        raise StorageOptionsError(
            f"addressing_style 'virtual' puts the bucket in the endpoint's host name, but "
            f"endpoint_url {endpoint!r} is an IP address: use addressing_style 'path' "
            "(config_kwargs={'s3': {'addressing_style': 'path'}}) or a host name")
    verify = _first(options.get("verify"), ck.get("verify"))
    if isinstance(verify, str) and verify.strip().lower() in _YES + _NO:
        verify = _flag({"verify": verify}, "verify")  # "false" from a config file; else a CA file
    ca_bundle = _first(options.get("ca_bundle"), verify if isinstance(verify, str) else None,
                       env.get("AWS_CA_BUNDLE"))
    return S3Settings(
        endpoint=endpoint, region=region, key=key, secret=secret, token=token, anon=anon,
        addressing_style=style, ca_bundle=ca_bundle, verify=verify is not False,
        requester_pays=_flag(options, "requester_pays"), credential_source=source,
    )
