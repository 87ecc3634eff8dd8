"""Resolve S3 settings from storage_options, the AWS environment, the credential chain.

Precedence (the NIXL seed's): explicit ``storage_options`` (s3fs conventions) >
standard AWS environment variables > the botocore credential chain (profiles,
shared files, container and instance credentials) > defaults.

>>> s = resolve_s3_settings({"key": "k", "secret": "s", "endpoint_url": "http://127.0.0.1:9000"},
...                         environ={})
>>> (s.endpoint, s.region, s.addressing_style, s.anon)
('http://127.0.0.1:9000', 'us-east-1', 'path', False)
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from ..errors import StorageOptionsError
from .settings import TUNING_OPTIONS, refuse_unknown

__all__ = ["S3Settings", "TUNING_OPTIONS", "resolve_s3_settings"]


@dataclass(frozen=True)
class S3Settings:
    """Everything needed to talk to one S3 endpoint; picklable, hashable.

    ``secret`` and ``token`` are left out of ``repr`` so they never reach logs.
    """

    endpoint: str | None = None
    region: str = "us-east-1"
    key: str | None = None
    secret: str | None = field(default=None, repr=False)
    token: str | None = field(default=None, repr=False)
    anon: bool = False
    addressing_style: str = "virtual"
    ca_bundle: str | None = None
    verify: bool = True
    requester_pays: bool = False
    credential_source: str = "none"


def _client_kwargs(options: Mapping[str, Any]) -> Mapping[str, Any]:
    return options.get("client_kwargs") or {}


def _first(*values: Any) -> Any:
    for v in values:
        if v not in (None, ""):
            return v
    return None


def _is_ip_address(url: str) -> bool:
    try:
        ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return False
    return True


Credentials = tuple[str | None, str | None, str | None, str | None]


def _chain_credentials(profile: str | None) -> Credentials:
    """Ask botocore's credential chain; returns (key, secret, token, region)."""
    try:
        import botocore.session
    except ImportError:  # pragma: no cover - botocore is a dependency
        return None, None, None, None
    session = botocore.session.Session(profile=profile) if profile else botocore.session.Session()
    creds = session.get_credentials()
    region = session.get_config_variable("region")
    if creds is None:
        return None, None, None, region
    frozen = creds.get_frozen_credentials()
    return frozen.access_key, frozen.secret_key, frozen.token, region


def resolve_s3_settings(
    options: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> S3Settings:
    """Resolve :class:`S3Settings` from s3fs-style ``options`` and the environment."""
    options = dict(options or {})
    refuse_unknown(options, "s3")  # the tuning ones are the store's: ignored here
    env = os.environ if environ is None else environ
    ck = _client_kwargs(options)
    s3_config = ((options.get("config_kwargs") or {}).get("s3") or {})

    endpoint = _first(options.get("endpoint_url"), ck.get("endpoint_url"),
                      env.get("AWS_ENDPOINT_URL_S3"), env.get("AWS_ENDPOINT_URL"))
    if endpoint is not None and options.get("use_ssl") is False and endpoint.startswith("https:"):
        endpoint = "http:" + endpoint[len("https:"):]
    anon = bool(options.get("anon", False))

    key = _first(options.get("key"), ck.get("aws_access_key_id"))
    secret = _first(options.get("secret"), ck.get("aws_secret_access_key"))
    token = _first(options.get("token"), ck.get("aws_session_token"))
    source = "storage_options" if key else "none"
    profile = _first(options.get("profile"), env.get("AWS_PROFILE"))
    chain_region = None
    if not anon and not key:
        # as in the AWS SDKs, key variables beat AWS_PROFILE; a profile named in
        # storage_options is explicit and beats both
        if not options.get("profile") and env.get("AWS_ACCESS_KEY_ID"):
            key = env.get("AWS_ACCESS_KEY_ID")
            secret = env.get("AWS_SECRET_ACCESS_KEY")
            token = env.get("AWS_SESSION_TOKEN")
            source = "environment"
        else:
            key, secret, token, chain_region = _chain_credentials(profile)
            source = "credential chain" if key else "none"
    if key and not secret and not anon:
        raise ValueError(f"an S3 access key was given ({source}) without its secret")

    region = _first(options.get("region_name"), options.get("region"), ck.get("region_name"),
                    env.get("AWS_REGION"), env.get("AWS_DEFAULT_REGION"), chain_region,
                    "us-east-1")
    style = _first(s3_config.get("addressing_style"), options.get("addressing_style"))
    if style in (None, "auto"):
        style = "path" if endpoint else "virtual"
    if style not in ("path", "virtual"):
        raise ValueError(f"addressing_style must be 'path', 'virtual' or 'auto', not {style!r}")
    if style == "virtual" and endpoint is not None and _is_ip_address(endpoint):
        raise StorageOptionsError(
            f"addressing_style 'virtual' puts the bucket in the endpoint's host name, but "
            f"endpoint_url {endpoint!r} is an IP address: use addressing_style 'path' "
            "(config_kwargs={'s3': {'addressing_style': 'path'}}) or a host name")
    verify = _first(options.get("verify"), ck.get("verify"))
    ca_bundle = _first(options.get("ca_bundle"), verify if isinstance(verify, str) else None,
                       env.get("AWS_CA_BUNDLE"))
    return S3Settings(
        endpoint=endpoint, region=region, key=key, secret=secret, token=token, anon=anon,
        addressing_style=style, ca_bundle=ca_bundle, verify=verify is not False,
        requester_pays=bool(options.get("requester_pays", False)), credential_source=source,
    )
