"""Settings: precedence file < env < flags, conversion, every problem at once, redaction."""

from __future__ import annotations

import argparse
import doctest
import json
import socket
from pathlib import Path

import pytest

from sensorguard.service import config as config_module
from sensorguard.service.config import PASSWORD_ENV, SETTING_NAMES, ConfigError, Settings, load_settings


@pytest.fixture
def bundle_dir(tmp_path: Path) -> str:
    path = tmp_path / "bundle"
    path.mkdir()
    return str(path)


def write(tmp_path: Path, text: str, name: str = "sensorguard.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def problems(flags: dict, env: dict | None = None, config_file: Path | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_settings(flags, env or {}, config_file)
    assert str(info.value).count("\n  - ") == len(info.value.problems)
    return info.value.problems


def test_doctests() -> None:
    assert doctest.testmod(config_module).failed == 0


def test_defaults(bundle_dir: str) -> None:
    s = load_settings({"model": bundle_dir}, {})
    assert s.broker == "mqtt://127.0.0.1:1883" and s.mqtt_version == "5"
    assert s.client_id == f"sensorguard-{socket.gethostname()}"
    assert (s.metrics_host, s.metrics_port, s.max_assets, s.hop, s.max_gap_s) == (
        "127.0.0.1",
        10100,
        1000,
        None,
        None,
    )
    assert (s.raise_after, s.clear_after, s.clear_level, s.stale_after_s) == (3, 5, 1.0, None)
    assert s.password() is None and s.broker_parts() == ("mqtt", "127.0.0.1", 1883, False)
    assert set(SETTING_NAMES) == set(Settings.__dataclass_fields__) - {"_env_password"}


def test_precedence_file_env_flags(tmp_path: Path, bundle_dir: str) -> None:
    cfg = write(
        tmp_path,
        f'model = "{bundle_dir}"\nmax_assets = 10\nkeepalive_s = 11\nhop = 12\ntopic_prefix = "from-file"\n',
    )
    env = {"SENSORGUARD_KEEPALIVE_S": "21", "SENSORGUARD_HOP": "22", "SENSORGUARD_LOG_JSON": "yes"}
    flags = {"hop": 32, "max_assets": None, "topic_prefix": None}
    s = load_settings(flags, env, cfg)
    assert (s.max_assets, s.keepalive_s, s.hop, s.topic_prefix, s.log_json) == (10, 21, 32, "from-file", True)
    assert load_settings({}, {}, cfg).hop == 12


def test_sensorguard_table_in_a_shared_file(tmp_path: Path, bundle_dir: str) -> None:
    cfg = write(tmp_path, f'[sensorguard]\nmodel = "{bundle_dir}"\nclear_level = 1\n\n[other_tool]\nx = 1\n')
    s = load_settings({}, {}, cfg)
    assert s.model == bundle_dir and s.clear_level == 1.0 and isinstance(s.clear_level, float)


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("max_gap_s", "2.5", 2.5),
        ("max_gap_s", "", None),
        ("max_gap_s", "none", None),
        ("hop", "4", 4),
        ("log_json", "TRUE", True),
        ("log_json", "0", False),
        ("log_json", "off", False),
        ("username", "", None),
        ("username", "none", "none"),
        ("mqtt_version", "3.1.1", "3.1.1"),
        ("mqtt_version", "311", "3.1.1"),
        ("log_level", "debug", "DEBUG"),
        ("stale_after_s", "60", 60.0),
    ],
)
def test_env_conversion(bundle_dir: str, name: str, text: str, expected: object) -> None:
    env = {f"SENSORGUARD_{name.upper()}": text, "SENSORGUARD_NOT_A_SETTING": "ignored"}
    got = getattr(load_settings({"model": bundle_dir}, env), name)
    assert got == expected and type(got) is type(expected)


def test_flags_may_be_text_or_paths(bundle_dir: str) -> None:
    s = load_settings({"model": Path(bundle_dir), "metrics_port": "0", "max_gap_s": 3}, {})
    assert s.model == bundle_dir and s.metrics_port == 0 and s.max_gap_s == 3.0


def test_all_problems_at_once(tmp_path: Path) -> None:
    cfg = write(tmp_path, 'max_asets = 5\nkeepalive_s = "soon"\npassword = "hunter2"\nclear_level = 1.5\n')
    env = {"SENSORGUARD_MAX_ASSETS": "many", "SENSORGUARD_TLS_CA": str(tmp_path / "missing.pem")}
    flags = {
        "metrics_port": 70000,
        "broker": "ftp://host",
        "mqtt_version": "4",
        "hop": 0,
        "log_level": "LOUD",
    }
    found = problems(flags, env, cfg)
    text = "\n".join(found)
    for needle in (
        "max_asets: unknown setting",
        "keepalive_s: expected int",
        "password: unknown setting; use password_file",
        "clear_level: must be in (0, 1]",
        "SENSORGUARD_MAX_ASSETS: expected int",
        "tls_ca: file",
        "metrics_port: must be in 0..65535",
        "broker: scheme must be mqtt:// or mqtts://",
        "mqtt_version: must be '5' or '3.1.1'",
        "hop: must be >= 1",
        "log_level: must be one of",
        "model: no model",
    ):
        assert needle in text, needle
    assert len(found) >= 12
    assert "hunter2" not in text
    assert "(from flag metrics_port)" in text and "(from SENSORGUARD_TLS_CA)" in text


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        ({"registry": "REG"}, "registry and name go together"),
        ({"name": "pumps"}, "registry and name go together"),
        ({"model": "BUNDLE", "registry": "REG", "name": "pumps"}, "not both"),
        ({"model": "/definitely/not/here"}, "does not exist"),
        ({"registry": "/definitely/not/here", "name": "pumps"}, "does not exist"),
    ],
)
def test_model_source_rules(tmp_path: Path, flags: dict, needle: str) -> None:
    for key in ("model", "registry"):
        if flags.get(key) in ("BUNDLE", "REG"):
            flags = flags | {key: str(tmp_path)}
    assert any(needle in p for p in problems(flags))


def test_a_data_file_given_as_the_model_is_said_to_be_a_file(tmp_path: Path) -> None:
    """``serve --model normal.csv`` said the bundle directory does not exist, of a file that does (a walk)."""
    data = tmp_path / "normal.csv"
    data.write_text("timestamp,a\n", encoding="utf-8")
    found = problems({"model": str(data)})
    assert any("is a file, not a bundle directory" in p for p in found)
    assert not any("does not exist" in p for p in found)


def test_demo_may_skip_the_model() -> None:
    assert load_settings({}, {}, require_model=False).model is None


@pytest.mark.parametrize(
    ("broker", "parts"),
    [
        ("mqtt://broker.local", ("mqtt", "broker.local", 1883, False)),
        ("mqtts://broker.local", ("mqtts", "broker.local", 8883, True)),
        ("mqtts://broker.local:9999/", ("mqtts", "broker.local", 9999, True)),
        ("MQTT://[::1]:1884", ("mqtt", "::1", 1884, False)),
    ],
)
def test_broker_parts(bundle_dir: str, broker: str, parts: tuple) -> None:
    assert load_settings({"model": bundle_dir, "broker": broker}, {}).broker_parts() == parts


@pytest.mark.parametrize(
    ("broker", "needle"),
    [
        ("broker.local:1883", "give a URL such as mqtt://broker.local:1883"),
        ("http://broker.local", "scheme"),
        ("mqtt://", "no host"),
        ("mqtt://host:99999", "cannot parse"),
        ("mqtt://host:0", "port must be"),
        ("mqtt://host/topic", "unexpected path"),
        ("mqtt://user:s3cret@host", "no credentials"),
    ],
)
def test_bad_brokers(bundle_dir: str, broker: str, needle: str) -> None:
    found = problems({"model": bundle_dir, "broker": broker})
    assert any(needle in p for p in found) and "s3cret" not in "\n".join(found)


def test_a_broker_without_a_scheme_is_one_line_naming_the_url_to_give(bundle_dir: str) -> None:
    """``127.0.0.1:18931`` gave three errors, one of them "no host" (found by a README walk)."""
    found = [p for p in problems({"model": bundle_dir, "broker": "127.0.0.1:18931"}) if p.startswith("broker")]
    assert found == ["broker: give a URL such as mqtt://127.0.0.1:18931 (mqtts:// for TLS), got '127.0.0.1:18931' "
                     "(from flag broker)"], found


def test_tls_rules(tmp_path: Path, bundle_dir: str) -> None:
    from tests.test_security import make_ca, make_server_cert, write_pem

    ca_key, ca_cert = make_ca("test ca")
    ca = Path(write_pem(tmp_path / "ca.pem", cert=ca_cert))
    found = "\n".join(problems({"model": bundle_dir, "tls_ca": str(ca), "tls_cert": str(ca)}))
    assert "use mqtts://" in found and "tls_cert and tls_key go together" in found
    s = load_settings({"model": bundle_dir, "broker": "mqtts://h", "tls_ca": str(ca)}, {})
    assert s.broker_parts()[3] and s.tls_ca == str(ca)
    key, cert = make_server_cert(ca_key, ca_cert, [])
    pair = {"tls_cert": write_pem(tmp_path / "c.pem", cert=cert), "tls_key": write_pem(tmp_path / "k.pem", key=key)}
    load_settings({"model": bundle_dir, "broker": "mqtts://h", **pair}, {})  # a certificate and its key: taken
    other, _ = make_server_cert(ca_key, ca_cert, [])
    write_pem(tmp_path / "k.pem", key=other)  # a key that is not the certificate's
    assert problems({"model": bundle_dir, "broker": "mqtts://h", **pair})[0].startswith("tls_cert: ")
    from cryptography.hazmat.primitives import serialization

    (tmp_path / "k.pem").write_bytes(key.private_bytes(  # passphrase-protected: said so, not "[SSL] PEM lib" (a walk)
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.BestAvailableEncryption(b"pw")))
    found = problems({"model": bundle_dir, "broker": "mqtts://h", **pair})[0]
    assert "is a passphrase-protected key" in found and "openssl pkey" in found, found


def test_password_from_file_is_lazy_and_redacted(tmp_path: Path, bundle_dir: str) -> None:
    secret = write(tmp_path, "hunter2\n", "pw")
    s = load_settings({"model": bundle_dir, "username": "u", "password_file": str(secret)}, {})
    secret.write_text("rotated\n")
    assert s.password() == "rotated"
    red = s.redacted()
    assert red["password"] == "<set>" and red["password_file"] == str(secret)
    assert "hunter2" not in repr(s) and "rotated" not in json.dumps(red)


def test_password_from_env_is_never_shown(bundle_dir: str) -> None:
    s = load_settings({"model": bundle_dir, "username": "u"}, {PASSWORD_ENV: "hunter2"})
    assert s.password() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in json.dumps(s.redacted())
    assert s.redacted()["password"] == "<set>"
    assert load_settings({"model": bundle_dir}, {}).redacted()["password"] is None


def test_password_problems(tmp_path: Path, bundle_dir: str) -> None:
    found = problems({"model": bundle_dir, "password_file": str(tmp_path / "nope")}, {PASSWORD_ENV: "x"})
    assert any("password_file: cannot read" in p for p in found)
    assert any("both password_file and" in p for p in found)
    for version in ("3.1.1", "5"):  # in MQTT 5 paho silently sent no password without a username (review)
        found = problems({"model": bundle_dir, "mqtt_version": version}, {PASSWORD_ENV: "x"})
        assert any("sent only with a username" in p for p in found), version
    secret = tmp_path / "secret"
    secret.write_text("s")
    assert any("sent only with a username" in p for p in problems({"model": bundle_dir, "password_file": str(secret)}))
    assert any("session_expiry_s: must be >= 1" in p for p in problems({"model": bundle_dir, "session_expiry_s": 0}))
    assert any("unknown setting" in p for p in problems({"model": bundle_dir, "password": "x"}))
    # set but empty (an env file's `SENSORGUARD_MQTT_PASSWORD=`): no password was sent, unsaid (a walk)
    found = problems({"model": bundle_dir, "username": "u"}, {PASSWORD_ENV: ""})
    assert any(f"{PASSWORD_ENV} is set but empty" in p for p in found), found
    secret = tmp_path / "pw-ok"
    secret.write_text("s")
    secret.chmod(0o600)
    for fine in ({"model": bundle_dir}, {"model": bundle_dir, "username": "u", "password_file": str(secret)}):
        load_settings(fine, {PASSWORD_ENV: ""})  # (a template's ${PW:-}): taken


def test_a_password_file_written_with_a_byte_order_mark_sends_the_password_without_it(tmp_path: Path,
                                                                                     bundle_dir: str) -> None:
    """Notepad's UTF-8 writes a BOM first: it was sent as part of the password, and refused (a walk)."""
    secret = tmp_path / "pw"
    secret.write_bytes("\ufeffhunter2\r\n".encode())
    secret.chmod(0o600)
    settings = load_settings({"model": bundle_dir, "username": "u", "password_file": str(secret)}, {})
    assert settings.password() == "hunter2"
    secret.write_bytes("\ufeff\n".encode())
    assert any("is empty" in p for p in problems({"model": bundle_dir, "username": "u", "password_file": str(secret)}))


def test_unreadable_config_file(tmp_path: Path) -> None:
    assert any("cannot read" in p for p in problems({}, {}, tmp_path / "missing.toml"))
    broken = write(tmp_path, "model = \n")
    assert any("cannot read" in p for p in problems({}, {}, broken))


def test_stray_top_level_key_next_to_table(tmp_path: Path, bundle_dir: str) -> None:
    cfg = write(tmp_path, f'modle = "x"\n[sensorguard]\nmodel = "{bundle_dir}"\n')
    assert any("unknown top-level key 'modle'" in p for p in problems({}, {}, cfg))


def test_topics(bundle_dir: str) -> None:
    s = load_settings({"model": bundle_dir, "output_prefix": "plant/sg", "topic_prefix": "plant/sensors",
                       "client_id": "sg-1"}, {})
    assert s.readings_filters() == ("plant/sensors/#",)
    assert s.alert_topic("a/b") == "plant/sg/alerts/a/b" and s.state_topic("a") == "plant/sg/state/a"
    assert (s.status_topic(), s.events_topic()) == ("plant/sg/status/sg-1", "plant/sg/events")  # the client id


def test_instance_and_partitions_from_every_layer(bundle_dir: str, tmp_path) -> None:
    from sensorguard.service.flags import add_setting_flags

    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    args = parser.parse_args(["--instance", "site-a", "--partition", "site-a/#", "--partition", "site-b/+/readings"])
    s = load_settings({"model": bundle_dir, "instance": args.instance, "partition": args.partition}, {})
    assert s.status_topic() == "sensorguard/status/site-a"
    assert s.readings_filters() == ("sensors/site-a/#", "sensors/site-b/+/readings")
    env = load_settings({"model": bundle_dir}, {"SENSORGUARD_PARTITION": "site-a/#, site-b/#"})
    cfg = write(tmp_path, f'model = "{bundle_dir}"\npartition = ["site-c/#"]\ninstance = "c"\n')
    toml = load_settings({}, {}, cfg)
    assert env.partition == ("site-a/#", "site-b/#") and (toml.partition, toml.instance_name) == (("site-c/#",), "c")
    for bad, says in ((["a/#", "a/b"], "overlap"), (["a#"], "not an MQTT topic filter"), (["#/a"], "not an MQTT"),
                      ([], "at least one")):
        found = problems({"model": bundle_dir, "partition": bad})
        assert any("partition" in p and says in p for p in found), (bad, found)
    assert load_settings({"model": bundle_dir, "partition": "a/#,"}, {}).partition == ("a/#",)  # a trailing comma
    for bad in ("a/b", "a+", "has space", ""):
        assert any("instance" in p for p in problems({"model": bundle_dir, "instance": bad})), bad
    for bad in ("", "a/#", "a//b", "/a", "+"):
        assert any("topic_prefix" in p for p in problems({"model": bundle_dir, "topic_prefix": bad}))


def test_settings_are_frozen(bundle_dir: str) -> None:
    s = load_settings({"model": bundle_dir}, {})
    with pytest.raises(AttributeError):
        s.hop = 3  # type: ignore[misc]


def test_nats_credentials_never_reach_print_config_errors_or_logs():
    """--print-config, a config error and the 'cannot reach' line every 5 s printed
    nats://alice:s3cret@... whole (found by review)."""
    import asyncio

    from sensorguard.service.cluster import ClusterError, connect

    s = load_settings({"model": None, "broker": "mqtt://h", "cluster": "nats://alice:s3cret@127.0.0.1:1"}, {},
                      require_model=False)
    assert "s3cret" not in str(s.redacted())
    with pytest.raises(ConfigError) as bad:
        load_settings({"model": None, "broker": "mqtt://h", "cluster": "http://alice:s3cret@h"}, {},
                      require_model=False)
    assert "s3cret" not in str(bad.value)
    with pytest.raises(ClusterError) as unreachable:
        asyncio.run(connect(s.cluster_servers()))
    assert "s3cret" not in str(unreachable.value) and "127.0.0.1" in str(unreachable.value)


def test_a_password_file_that_is_not_utf8_is_one_line_without_its_bytes(tmp_path):
    """It passed the check (opened, not read) and failed at connect as an internal error quoting
    a byte of the password (found by review)."""
    secret = tmp_path / "pw"
    secret.write_bytes(b"s\xe9cret")
    with pytest.raises(ConfigError) as bad:
        load_settings({"model": None, "broker": "mqtt://h", "username": "u", "password_file": str(secret)}, {},
                      require_model=False)
    assert "not UTF-8" in str(bad.value) and "0xe9" not in str(bad.value)


def test_print_config_shows_the_settings_before_the_directories_they_name_exist(tmp_path, capsys, monkeypatch):
    """``--print-config`` is the first thing to run when a setting does not seem to apply; it
    refused to print anything while the registry it names was still to be made."""
    from sensorguard.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(PASSWORD_ENV, raising=False)
    code = main(["serve", "--registry", "models", "--name", "pump", "--metrics-port", "10207", "--print-config"])
    out, err = capsys.readouterr()
    assert code == 1
    shown = json.loads(out)
    assert (shown["registry"], shown["name"], shown["metrics_port"]) == ("models", "pump", 10207)
    assert "registry directory 'models' does not exist" in err and "Traceback" not in err
    (tmp_path / "models").mkdir()
    assert main(["serve", "--registry", "models", "--name", "pump", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["registry"] == "models"
    # the worker count serve would run (unset: one a usable core, at most one a partition; a walk)
    from sensorguard.service.worker_plans import usable_cores

    assert main(["serve", "--registry", "models", "--name", "pump", "--partition", "a/#", "--partition", "b/#",
                 "--print-config"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["workers"] is None and shown["workers_resolved"] == min(2, usable_cores())


@pytest.mark.parametrize("value", [-0.5, 1.5])
def test_clear_at_outside_the_unit_range_is_a_config_problem(value):
    with pytest.raises(ConfigError, match="clear_at"):
        load_settings({"model": None, "registry": None, "clear_at": value}, {}, require_model=False)


def test_clear_at_reaches_the_daemons_alert_rules(tiny_bundle):
    from prometheus_client import CollectorRegistry

    from sensorguard.service.daemon import Daemon

    settings = load_settings({"model": None, "registry": None, "clear_at": 0.0, "metrics_port": 0}, {},
                             require_model=False)
    assert Daemon(settings, tiny_bundle, CollectorRegistry()).rules.clear_at == 0.0


def test_a_mistyped_setting_is_named_with_the_one_it_resembles(tmp_path: Path, bundle_dir: str) -> None:
    """A mistyped SENSORGUARD_* variable was ignored in silence (the daemon served on its default
    port), and SENSORGUARD_PASSWORD sent no password; unrelated variables (a wrapper's) still pass."""
    env = {"SENSORGUARD_METRICS_PROT": "10200", "SENSORGUARD_PASSWORD": "x", "SENSORGUARD_RETRAIN_NAME": "pump",
           "SENSORGUARD_DEBUG": "1"}
    found = problems({"model": bundle_dir}, env)
    assert "SENSORGUARD_METRICS_PROT: unknown setting; did you mean SENSORGUARD_METRICS_PORT?" in found
    assert "SENSORGUARD_PASSWORD: unknown setting; use password_file or SENSORGUARD_MQTT_PASSWORD" in found
    assert len(found) == 2
    # a leftover beside a password that works does not stop a start
    s = load_settings({"model": bundle_dir, "username": "u"}, {"SENSORGUARD_PASSWORD": "x", PASSWORD_ENV: "y"})
    assert s.password() == "y"
    cfg = write(tmp_path, "metrics_prot = 1\n")
    assert problems({"model": bundle_dir}, {}, cfg) == [f"config file {cfg}: metrics_prot: unknown setting; "
                                                        "did you mean metrics_port?"]


def test_model_and_registry_follow_the_layers_and_one_layer_with_both_names_each(tmp_path: Path,
                                                                               bundle_dir: str) -> None:
    """``serve --config plant.toml --model m`` with a registry in the file was refused: the flag
    now wins, as any flag does; both in one layer still conflict, each value's origin named."""
    cfg = write(tmp_path, f'registry = "{tmp_path}"\nname = "pump"\n')
    s = load_settings({"model": bundle_dir}, {}, cfg)
    assert (s.model, s.registry, s.name) == (bundle_dir, None, None)
    s = load_settings({}, {"SENSORGUARD_REGISTRY": str(tmp_path), "SENSORGUARD_NAME": "p"},
                      write(tmp_path, f'model = "{bundle_dir}"\n', "m.toml"))
    assert (s.model, s.registry, s.name) == (None, str(tmp_path), "p")
    both = write(tmp_path, f'registry = "{tmp_path}"\nname = "pump"\nmodel = "{bundle_dir}"\n', "both.toml")
    found = problems({}, {}, both)
    assert found == [f"model: give either model or registry+name, not both (config file {both}: registry, config "
                     f"file {both}: name) (from config file {both}: model)"]


def test_more_workers_than_partitions_is_found_with_every_other_problem(bundle_dir: str) -> None:
    """``serve --workers 2 --print-config`` said the settings were fine; serve then refused them."""
    found = problems({"model": bundle_dir, "workers": 2, "metrics_port": 99999})
    assert any(p.startswith("workers: 2 workers need at least as many partitions, got 1 (#)") for p in found)
    assert any(p.startswith("metrics_port: must be in 0..65535") for p in found)
    assert load_settings({"model": bundle_dir, "workers": 2, "partition": ["a/#", "b/#"]}, {}).workers == 2


def test_a_switch_can_be_turned_off_by_a_flag_over_the_environment(bundle_dir: str) -> None:
    """The container image sets SENSORGUARD_LOG_JSON=true, and a flag could only set True:
    ``--no-log-json`` was an unrecognized argument."""
    from sensorguard.arguments import build_parser

    parse = build_parser().parse_args
    assert parse(["serve", "--no-log-json"]).log_json is False and parse(["serve", "--log-json"]).log_json is True
    assert parse(["serve"]).log_json is None  # not given: the file or the environment decides
    s = load_settings({"model": bundle_dir, "log_json": False, "tls_insecure": False},
                      {"SENSORGUARD_LOG_JSON": "true", "SENSORGUARD_TLS_INSECURE": "true"})
    assert s.log_json is False and s.tls_insecure is False


def test_an_empty_password_file_is_refused_and_one_others_can_read_is_warned(tmp_path: Path, bundle_dir: str,
                                                                            monkeypatch) -> None:
    """A world-readable or empty password file was taken without a word (a README walk)."""
    from sensorguard.service.startup_log import password_file_warning

    empty = tmp_path / "empty"
    empty.write_text("\n")
    found = problems({"model": bundle_dir, "username": "u", "password_file": str(empty)})
    assert found == [f"password_file: {str(empty)!r} is empty: the broker would get an empty password (from flag "
                     "password_file)"]
    secret = tmp_path / "pw"
    secret.write_text("s3cret\n")
    secret.chmod(0o640)  # its group may be meant to read it
    assert password_file_warning(str(secret)) is None
    secret.chmod(0o644)
    assert password_file_warning(str(secret)) == (f"password_file {secret} can be read by every user "
                                                  f"of this host (mode 644): chmod 600 {secret}")  # (not changed)
    secret.chmod(0o666)
    assert "can be read or changed by every user" in password_file_warning(str(secret))
    secret.chmod(0o644)
    assert password_file_warning(None) is None and password_file_warning(str(tmp_path / "gone")) is None
    import os
    from types import SimpleNamespace

    # a secret mounted read-only (Kubernetes gives mode 0644): nobody can chmod it, so nothing is said
    real = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_flag=real(path).f_flag | os.ST_RDONLY))
    assert password_file_warning(str(secret)) is None


def test_a_state_or_record_dir_that_cannot_be_made_is_one_line_at_start(tmp_path, bundle_dir):
    """``--state-dir /proc/nope`` started, failed every save for its whole run (each command answered
    "NOT SAVED") and exited 74 (a walk); ``--record-dir /proc/x`` said no setting's name."""
    from sensorguard.service.serve import _folders_unmade

    (tmp_path / "file").write_text("x")
    settings = load_settings({"model": bundle_dir, "state_dir": str(tmp_path / "file" / "state"),
                              "record_dir": str(tmp_path / "rec")}, {})
    problems = _folders_unmade(settings)
    assert len(problems) == 1 and problems[0].startswith(f"state_dir: '{tmp_path / 'file' / 'state'}' cannot be made")
    assert (tmp_path / "rec").is_dir()  # made


@pytest.mark.parametrize("name, meant", [("SENSORGUARD_MQTT_BROKER", "SENSORGUARD_BROKER"),
                                         ("SENSORGUARD_MQTT_CLIENT_ID", "SENSORGUARD_CLIENT_ID"),
                                         ("SENSORGUARD_MQTT_USER", "SENSORGUARD_USERNAME"),
                                         ("SENSORGUARD_TLS_CA_FILE", "SENSORGUARD_TLS_CA")])
def test_a_likely_slip_in_a_variable_name_is_an_error_naming_the_setting(bundle_dir, name, meant):
    """SENSORGUARD_MQTT_BROKER was ignored in silence and the daemon went to the default broker
    (a walk): the one secret variable is SENSORGUARD_MQTT_PASSWORD, so the prefix is an easy slip."""
    assert problems({"model": bundle_dir}, {name: "x"}) == [f"{name}: unknown setting; did you mean {meant}?"]
    for other in ("SENSORGUARD_WRAPPER_HOME", "SENSORGUARD_USER", "SENSORGUARD_PORT"):  # a wrapper's: not ours
        load_settings({"model": bundle_dir}, {other: "x"})


def test_a_tls_file_openssl_cannot_read_is_named_before_the_start(bundle_dir, tmp_path):
    """A CSV given as tls_ca passed --print-config; the start then failed with OpenSSL's words
    alone, naming no setting (a walk)."""
    (tmp_path / "ca.pem").write_text("timestamp,value\n1,2\n")
    found = problems({"model": bundle_dir, "broker": "mqtts://h", "tls_ca": str(tmp_path / "ca.pem")})
    assert len(found) == 1 and found[0].startswith(f"tls_ca: '{tmp_path / 'ca.pem'}' holds no CA certificate")


def test_an_output_prefix_under_the_topic_prefix_and_units_are_named(tmp_path: Path) -> None:
    """A CLI walk: ``--output-prefix sensors`` (the topic prefix) was taken, and the daemon read its
    own statuses back as readings (``bad_asset``); ``--record-max-mb 0`` said "must be > 0 seconds"."""
    text = "\n".join(problems({"output_prefix": "sensors/out", "record_max_mb": 0, "record_max_age_days": 0},
                              {}, None))
    assert "output_prefix: 'sensors/out' is under topic_prefix 'sensors'" in text
    assert "record_max_mb: must be > 0 MB, got 0" in text and "record_max_age_days: must be > 0 days" in text
    fine = "\n".join(problems({"output_prefix": "sensorsguard", "topic_prefix": "sensors"}, {}, None))
    assert "output_prefix" not in fine
