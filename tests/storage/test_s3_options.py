"""S3 configuration precedence: storage_options > AWS_* environment > credential chain >
defaults, and opening a SeaweedFS domain with credentials from the environment only."""

from __future__ import annotations

import os

import numpy as np
import pytest

import h5dask
from h5dask.errors import StorageOptionsError
from h5dask.storage import open_location, resolve_s3_settings

AWS_VARS = ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_REGION", "AWS_DEFAULT_REGION",
            "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE",
            "AWS_DEFAULT_PROFILE", "AWS_CA_BUNDLE", "AWS_SHARED_CREDENTIALS_FILE",
            "AWS_CONFIG_FILE", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI", "AWS_CONTAINER_CREDENTIALS_FULL_URI")


@pytest.fixture(autouse=True)
def clean_aws_env(monkeypatch, tmp_path):
    """No AWS setting of the developer's machine leaks in; no instance-metadata lookups."""
    for name in AWS_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


@pytest.fixture
def profiles(monkeypatch, tmp_path):
    """Shared credentials and config files with a default and a 'team' profile."""
    creds, config = tmp_path / "credentials", tmp_path / "config"
    creds.write_text("[default]\naws_access_key_id = DEFAULTKEY\n"
                     "aws_secret_access_key = defaultsecret\n\n"
                     "[team]\naws_access_key_id = TEAMKEY\naws_secret_access_key = teamsecret\n"
                     "aws_session_token = teamtoken\n")
    config.write_text("[default]\nregion = eu-west-1\n\n[profile team]\nregion = ap-south-1\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))


def test_defaults() -> None:
    s = resolve_s3_settings({})
    assert (s.endpoint, s.region, s.key, s.secret, s.token) == (None, "us-east-1", None, None,
                                                                 None)
    assert (s.anon, s.addressing_style, s.verify, s.ca_bundle) == (False, "virtual", True, None)
    assert s.credential_source == "none"


def test_endpoint_precedence(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://generic:1")
    assert resolve_s3_settings({}).endpoint == "http://generic:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://s3-specific:2")
    assert resolve_s3_settings({}).endpoint == "http://s3-specific:2"
    opts = {"client_kwargs": {"endpoint_url": "http://client-kwargs:3"}}
    assert resolve_s3_settings(opts).endpoint == "http://client-kwargs:3"
    opts["endpoint_url"] = "http://explicit:4"
    assert resolve_s3_settings(opts).endpoint == "http://explicit:4"
    # an explicit environ mapping is used instead of os.environ
    assert resolve_s3_settings({}, environ={"AWS_ENDPOINT_URL": "http://m:5"}).endpoint == \
        "http://m:5"
    assert resolve_s3_settings({"endpoint_url": "https://h:6", "use_ssl": False}).endpoint == \
        "http://h:6"


def test_credentials_env_then_options(monkeypatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "envtoken")
    s = resolve_s3_settings({})
    assert (s.key, s.secret, s.token, s.credential_source) == ("ENVKEY", "envsecret",
                                                               "envtoken", "environment")
    s = resolve_s3_settings({"key": "OPTKEY", "secret": "optsecret"})
    assert (s.key, s.secret, s.token, s.credential_source) == ("OPTKEY", "optsecret", None,
                                                               "storage_options")
    s = resolve_s3_settings({"client_kwargs": {"aws_access_key_id": "CK",
                                               "aws_secret_access_key": "cks"}})
    assert (s.key, s.secret) == ("CK", "cks")


def test_region_precedence(monkeypatch, profiles) -> None:
    assert resolve_s3_settings({}).region == "eu-west-1"  # the default profile's config
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-west-1")
    assert resolve_s3_settings({}).region == "us-west-1"
    monkeypatch.setenv("AWS_REGION", "us-west-2")
    assert resolve_s3_settings({}).region == "us-west-2"
    assert resolve_s3_settings({"client_kwargs": {"region_name": "ca-central-1"}}).region == \
        "ca-central-1"
    assert resolve_s3_settings({"region": "sa-east-1"}).region == "sa-east-1"


def test_credential_chain_default_profile(profiles) -> None:
    s = resolve_s3_settings({})
    assert (s.key, s.secret, s.credential_source) == ("DEFAULTKEY", "defaultsecret",
                                                      "credential chain")


def test_aws_profile(monkeypatch, profiles) -> None:
    monkeypatch.setenv("AWS_PROFILE", "team")
    s = resolve_s3_settings({})
    assert (s.key, s.secret, s.token, s.region) == ("TEAMKEY", "teamsecret", "teamtoken",
                                                    "ap-south-1")
    # explicit keys in storage_options beat the profile
    s = resolve_s3_settings({"key": "OPT", "secret": "opts"})
    assert (s.key, s.token) == ("OPT", None)


def test_env_keys_beat_aws_profile(monkeypatch, profiles) -> None:
    """As in the AWS CLI and SDKs: AWS_ACCESS_KEY_ID/SECRET win over AWS_PROFILE."""
    monkeypatch.setenv("AWS_PROFILE", "team")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    s = resolve_s3_settings({})
    assert (s.key, s.secret, s.token, s.credential_source) == ("ENVKEY", "envsecret", None,
                                                               "environment")
    # but a profile named in storage_options is explicit, and beats the environment
    s = resolve_s3_settings({"profile": "team"})
    assert (s.key, s.token, s.credential_source) == ("TEAMKEY", "teamtoken",
                                                     "credential chain")


def test_unknown_profile_is_an_error(monkeypatch, profiles) -> None:
    """Named wherever it came from, with the profiles that do exist."""
    with pytest.raises(StorageOptionsError, match=r"'nosuch' \(from storage_options profile\)"
                       r".*\['default', 'team'\]"):
        resolve_s3_settings({"profile": "nosuch"})
    monkeypatch.setenv("AWS_PROFILE", "typo")
    with pytest.raises(StorageOptionsError, match=r"'typo' \(from AWS_PROFILE\).*AWS_CONFIG_FILE"):
        resolve_s3_settings({"anon": True})


@pytest.fixture
def endpoint_profiles(monkeypatch, tmp_path):
    """A profile with its own endpoint_url, one with a services section, one without."""
    config = tmp_path / "endpoint-config"
    config.write_text("[profile own]\nregion = eu-north-1\nendpoint_url = http://own:1\n\n"
                      "[profile svc]\nendpoint_url = http://global:2\nservices = store\n\n"
                      "[services store]\ns3 =\n  endpoint_url = http://service:3\n\n"
                      "[profile plain]\nregion = eu-south-1\n")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))


def test_endpoint_url_from_the_profile(monkeypatch, endpoint_profiles) -> None:
    """The shared config file's endpoint_url (the s3 one of a services section first), as
    the AWS SDKs read it; below the environment and storage_options."""
    monkeypatch.setenv("AWS_PROFILE", "own")
    s = resolve_s3_settings({"anon": True})
    assert (s.endpoint, s.region, s.addressing_style) == ("http://own:1", "eu-north-1", "path")
    assert resolve_s3_settings({"anon": True, "profile": "svc"}).endpoint == "http://service:3"
    assert resolve_s3_settings({"anon": True, "profile": "plain"}).endpoint is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://env:4")
    assert resolve_s3_settings({"anon": True}).endpoint == "http://env:4"
    assert resolve_s3_settings({"anon": True, "endpoint_url": "http://opt:5"}).endpoint == \
        "http://opt:5"
    monkeypatch.setenv("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "true")
    assert resolve_s3_settings({"anon": True}).endpoint is None


def test_profile_region_applies_with_explicit_keys(monkeypatch, profiles) -> None:
    """Keys from storage_options do not hide the profile's region (setting by setting)."""
    monkeypatch.setenv("AWS_PROFILE", "team")
    s = resolve_s3_settings({"key": "K", "secret": "S"})
    assert (s.key, s.region) == ("K", "ap-south-1")


def test_profile_files_are_read_once_until_they_change(monkeypatch, profiles,
                                                     tmp_path) -> None:
    """Keys and endpoint given, region left to the profile: botocore reads the files at the
    first open only (about 10 ms each time otherwise), and an edit is seen at the next."""
    from h5dask.storage import s3_options

    reads = []
    read_profile = s3_options._read_profile
    monkeypatch.setattr(s3_options, "_read_profile",
                        lambda *a: reads.append(a) or read_profile(*a))
    options = {"key": "K", "secret": "S", "endpoint_url": "http://127.0.0.1:9000"}
    monkeypatch.setenv("AWS_PROFILE", "team")
    assert [resolve_s3_settings(options).region for _ in range(3)] == ["ap-south-1"] * 3
    assert len(reads) == 1
    config = tmp_path / "config"
    config.write_text("[profile team]\nregion = eu-north-1\n")
    later = config.stat().st_mtime_ns + 2_000_000_000  # a coarse clock could repeat it
    os.utime(config, ns=(later, later))
    assert resolve_s3_settings(options).region == "eu-north-1"
    monkeypatch.setenv("AWS_PROFILE", "default")
    assert resolve_s3_settings(options).region == "us-east-1"  # no region for it now
    assert len(reads) == 3


def _use_a_profile_for(seaweedfs, monkeypatch, tmp_path) -> None:
    """AWS_PROFILE names a profile with the server's keys (credentials file) and
    endpoint_url (config file); nothing else is configured."""
    (tmp_path / "creds").write_text(f"[weed]\naws_access_key_id = {seaweedfs.access_key}\n"
                                    f"aws_secret_access_key = {seaweedfs.secret_key}\n")
    (tmp_path / "conf").write_text(f"[profile weed]\nendpoint_url = {seaweedfs.endpoint}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "creds"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "conf"))
    monkeypatch.setenv("AWS_PROFILE", "weed")


def test_seaweedfs_through_a_profile_only(monkeypatch, seaweedfs, storage_options,
                                          s3_bucket_url, tmp_path) -> None:
    """AWS_PROFILE alone (keys in the credentials file, endpoint_url in the config file)
    reaches the server."""
    url = f"{s3_bucket_url}/profile-only.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        f.create_dataset("x", data=np.arange(6), chunks=(3,))
    _use_a_profile_for(seaweedfs, monkeypatch, tmp_path)
    with h5dask.File(url) as f:
        np.testing.assert_array_equal(f["x"][...], np.arange(6))


def test_anonymous(monkeypatch, profiles) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "ENVKEY")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "envsecret")
    s = resolve_s3_settings({"anon": True})
    assert s.anon and s.key is None and s.secret is None


def test_ca_bundle_and_verify(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("AWS_CA_BUNDLE", "/env/ca.pem")
    assert resolve_s3_settings({}).ca_bundle == "/env/ca.pem"
    assert resolve_s3_settings({"client_kwargs": {"verify": "/ck/ca.pem"}}).ca_bundle == \
        "/ck/ca.pem"
    assert resolve_s3_settings({"ca_bundle": "/opt/ca.pem"}).ca_bundle == "/opt/ca.pem"
    s = resolve_s3_settings({"verify": False})
    assert s.verify is False
    # the bundle is read when the store is built; a missing file says so
    with pytest.raises(FileNotFoundError):
        open_location("s3://bkt/x.h5", {"anon": True, "endpoint_url": "https://h:1"})


def test_addressing_style() -> None:
    assert resolve_s3_settings({}).addressing_style == "virtual"
    assert resolve_s3_settings({"endpoint_url": "http://h:1"}).addressing_style == "path"
    assert resolve_s3_settings({"endpoint_url": "http://h:1", "config_kwargs": {
        "s3": {"addressing_style": "virtual"}}}).addressing_style == "virtual"
    assert resolve_s3_settings({"addressing_style": "path"}).addressing_style == "path"
    assert resolve_s3_settings({"addressing_style": "auto"}).addressing_style == "virtual"
    with pytest.raises(ValueError, match="addressing_style"):
        resolve_s3_settings({"addressing_style": "sideways"})


def test_bad_options() -> None:
    with pytest.raises(ValueError, match="unknown S3 storage_options.*bogus"):
        resolve_s3_settings({"bogus": 1})
    with pytest.raises(StorageOptionsError, match="without its secret"):
        resolve_s3_settings({"key": "K"})
    with pytest.raises(StorageOptionsError, match="addressing_style must be"):
        resolve_s3_settings({"config_kwargs": {"s3": {"addressing_style": "sideways"}}})


def test_secrets_stay_out_of_repr() -> None:
    s = resolve_s3_settings({"key": "K", "secret": "TOPSECRET", "token": "TOKENVALUE"})
    assert "TOPSECRET" not in repr(s) and "TOKENVALUE" not in repr(s)
    store = open_location("s3://bkt/x.h5", {"key": "K", "secret": "TOPSECRET",
                                            "endpoint_url": "http://127.0.0.1:1"}).store
    assert "TOPSECRET" not in repr(store) and store.root_url == "s3://bkt"


def test_tuning_options_reach_the_store() -> None:
    store = open_location("s3://bkt/x.h5", {
        "anon": True, "endpoint_url": "http://127.0.0.1:1", "max_concurrency": 3,
        "max_attempts": 2, "multipart_threshold": 2048, "part_size": 1024, "timeout": 5}).store
    tuning = store.tuning
    assert (store.max_concurrency, store.retry.max_attempts, tuning.multipart_threshold,
            tuning.part_size, tuning.timeout) == (3, 2, 2048, 1024, 5.0)
    with pytest.raises(ValueError, match="multipart_threshold"):
        open_location("s3://bkt/y.h5", {"anon": True, "multipart_threshold": 10,
                                        "part_size": 100})


def test_seaweedfs_credentials_from_env_only(monkeypatch, seaweedfs, storage_options,
                                             s3_bucket_url) -> None:
    url = f"{s3_bucket_url}/env-only.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        f.create_dataset("x", data=np.arange(12, dtype="<i2"), chunks=(5,))
    for name, value in seaweedfs.env().items():  # AWS_ENDPOINT_URL, keys, region
        monkeypatch.setenv(name, value)
    store = open_location(url).store
    assert store.settings.credential_source == "environment"
    assert store.settings.endpoint == seaweedfs.endpoint
    with h5dask.File(url) as f:
        np.testing.assert_array_equal(f["x"][...], np.arange(12, dtype="<i2"))
    # and writing with them
    with h5dask.File(f"{s3_bucket_url}/env-written.h5", "w") as f:
        f.attrs["by"] = "env"
    with h5dask.File(f"{s3_bucket_url}/env-written.h5", storage_options=storage_options) as f:
        assert f.attrs["by"] == "env"


def test_settings_reach_the_s3_client() -> None:
    """What the resolved settings become in obstore's S3Store configuration."""
    anon = open_location("s3://bkt/x.h5", {"anon": True, "endpoint_url": "http://h:1",
                                           "config_kwargs": {"s3": {
                                               "addressing_style": "virtual"}}}).store
    cfg = anon._store.config
    assert cfg["virtual_hosted_style_request"] == "true" and cfg["skip_signature"] == "true"
    # virtual-hosted: the bucket is in the host name, as boto3 and s3fs address it
    assert cfg["endpoint"] == "http://bkt.h:1" and "access_key_id" not in cfg
    keyed = open_location("s3://bkt/x.h5", {"key": "K", "secret": "S", "token": "T",
                                            "region": "eu-west-3",
                                            "endpoint_url": "http://h:1"}).store
    cfg = keyed._store.config
    assert cfg["virtual_hosted_style_request"] == "false"  # path style for an endpoint
    assert (cfg["access_key_id"], cfg["secret_access_key"], cfg["session_token"],
            cfg["region"]) == ("K", "S", "T", "eu-west-3")
    assert "skip_signature" not in cfg


@pytest.mark.parametrize("endpoint, expected", [
    ("http://h:1", "http://bkt.h:1"), ("https://s3.example.org/", "https://bkt.s3.example.org"),
    ("https://user@s3.example.org:8443/base", "https://user@bkt.s3.example.org:8443/base"),
])
def test_virtual_hosted_style_puts_the_bucket_in_the_endpoint_host(endpoint, expected) -> None:
    """object_store takes a virtual-hosted endpoint as the bucket's own: given the bare
    endpoint, a key's first segment was sent as the bucket (another bucket's objects)."""
    store = open_location("s3://bkt/x.h5", {"anon": True, "endpoint_url": endpoint,
                                            "addressing_style": "virtual"}).store
    assert store._store.config["endpoint"] == expected


def test_virtual_hosted_style_needs_a_host_name() -> None:
    with pytest.raises(StorageOptionsError, match=r"127\.0\.0\.1.*addressing_style.*'path'"):
        open_location("s3://bkt/x.h5", {"anon": True, "endpoint_url": "http://127.0.0.1:9000",
                                        "addressing_style": "virtual"})


@pytest.mark.parametrize("options, match", [
    ({"client_kwargs": {"endpoint_url": "http://h:1", "use_ssl": False}},
     r"client_kwargs \['use_ssl'\].*valid: \['aws_access_key_id'.*'verify'\]"),
    ({"config_kwargs": {"connect_timeout": 3, "retries": {"max_attempts": 2}}},
     r"config_kwargs \['connect_timeout', 'retries'\].*timeout, connect_timeout, max_attempts"),
    ({"config_kwargs": {"s3": {"addressing_style": "path", "use_accelerate_endpoint": True}}},
     r"config_kwargs\.s3 \['use_accelerate_endpoint'\].*valid: \['addressing_style'\]"),
])
def test_unknown_nested_options_are_refused_by_name(options, match) -> None:
    """s3fs passes client_kwargs/config_kwargs on to botocore; h5dask's S3 client uses a
    few of them, and a name it would ignore is refused rather than silently dropped."""
    with pytest.raises(StorageOptionsError, match=match):
        resolve_s3_settings(options)


def test_profile_settings_travel_to_workers_without_the_profile(
        monkeypatch, seaweedfs, storage_options, s3_bucket_url, tmp_path) -> None:
    """What the client resolved from AWS_PROFILE (endpoint and keys) is pickled with the
    tasks: a worker process with no AWS environment and no profile files reads the chunks."""
    import os
    import pickle
    import subprocess
    import sys

    xr = pytest.importorskip("xarray")
    url = f"{s3_bucket_url}/to-workers.h5"
    with h5dask.File(url, "w", storage_options=storage_options) as f:
        f.create_dataset("x", data=np.arange(8.0), chunks=(3,))
    _use_a_profile_for(seaweedfs, monkeypatch, tmp_path)
    data = xr.open_dataset(url, engine="h5cloud", chunks={})["x"].data
    (tmp_path / "graph.pkl").write_bytes(pickle.dumps(data))
    worker_env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    worker_env.update(HOME=str(tmp_path / "nohome"), AWS_EC2_METADATA_DISABLED="true",
                      AWS_CONFIG_FILE=os.devnull, AWS_SHARED_CREDENTIALS_FILE=os.devnull)
    code = ("import pickle, sys; a = pickle.load(open(sys.argv[1], 'rb'));"
            "print(a.compute(scheduler='sync').tolist())")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "graph.pkl")],
                         env=worker_env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == str(np.arange(8.0).tolist())


@pytest.mark.parametrize("endpoint, origin", [
    ("127.0.0.1:9000", "storage_options"), ("ftp://h:1", "storage_options"),
    ("http://", "storage_options"), ("localhost:9000", "AWS_ENDPOINT_URL"),
])
def test_endpoint_without_http_scheme_is_refused(monkeypatch, endpoint, origin) -> None:
    """obstore panics on an endpoint without a scheme ("rust future panicked: unknown
    error"); the endpoint and where it came from are named instead."""
    options = {"anon": True}
    if origin == "storage_options":
        options["endpoint_url"] = endpoint
    else:
        monkeypatch.setenv(origin, endpoint)
    with pytest.raises(StorageOptionsError, match=rf"{endpoint!r} \(from {origin}\).*http://"):
        open_location("s3://bkt/x.h5", options)


def test_use_ssl_and_verify_read_as_booleans_too() -> None:
    """use_ssl and verify as a config file writes them: "false" is false (it kept https,
    and verify="false" was taken for the path of a CA bundle); any other verify string
    is a CA bundle."""
    https = {"endpoint_url": "https://h:1", "key": "k", "secret": "s"}
    assert resolve_s3_settings({**https, "use_ssl": "false"}).endpoint == "http://h:1"
    assert resolve_s3_settings({**https, "use_ssl": "true"}).endpoint == "https://h:1"
    s = resolve_s3_settings({**https, "verify": "false"})
    assert (s.verify, s.ca_bundle) == (False, None)
    s = resolve_s3_settings({**https, "client_kwargs": {"verify": "/etc/ca.pem"}})
    assert (s.verify, s.ca_bundle) == (True, "/etc/ca.pem")
    with pytest.raises(StorageOptionsError, match="use_ssl='maybe'"):
        resolve_s3_settings({**https, "use_ssl": "maybe"})


def test_flags_read_as_booleans() -> None:
    """anon and requester_pays as written in a config file ("false") mean false, and a
    value that is no yes/no is refused by name (bool("false") was True: unsigned requests)."""
    for text, value in (("false", False), ("True", True), ("0", False), (1, True)):
        s = resolve_s3_settings({"anon": text, "requester_pays": text})
        assert (s.anon, s.requester_pays) == (value, value)
    with pytest.raises(StorageOptionsError, match=r"anon='maybe'.*true or false"):
        resolve_s3_settings({"anon": "maybe"})
    store = open_location("s3://bkt/x.h5", {"anon": True, "endpoint_url": "http://h:1",
                                            "requester_pays": True}).store
    assert store._store.config["request_payer"] == "true"
