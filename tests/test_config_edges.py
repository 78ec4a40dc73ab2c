"""Edges of the settings that no test pinned (found by mutating service/config.py): the password
file's exact bytes, cluster mode's servers and subscriptions, which of model and registry wins,
odd config files, and what ``--print-config`` shows."""

from __future__ import annotations

from pathlib import Path

from sensorguard.service.config import load_settings, merge_settings

BASE = {"model": None, "metrics_port": 0}


def settings(**flags):
    return load_settings({**BASE, **flags}, {}, require_model=False)


def test_a_password_keeps_its_own_spaces_and_loses_only_the_line_end(tmp_path: Path):
    """Only the file's line end goes (``\\n`` or a Windows ``\\r\\n``): spaces or tabs at its end are
    part of the password."""
    for text, password in (("pass word \t\n", "pass word \t"), ("secret\r\n", "secret"), ("x\n\n", "x")):
        path = tmp_path / "pw"
        path.write_text(text, encoding="utf-8", newline="")
        path.chmod(0o600)
        assert settings(username="u", password_file=str(path)).password() == password, repr(text)


def test_cluster_servers_are_split_trimmed_and_empty_entries_dropped():
    """``--cluster nats://a:4222,`` (a trailing comma) and spaces around entries, as an environment
    line gives them, name the servers and nothing else."""
    s = settings(cluster=["nats://a:4222,", " nats://b:4222 "])
    assert s.cluster_servers() == ("nats://a:4222", "nats://b:4222")
    assert s.redacted()["cluster"] == ["nats://a:4222", "nats://b:4222"]
    assert settings().redacted()["cluster"] is None  # MQTT mode: no cluster, not an empty list


def test_cluster_mode_subscribes_to_no_readings_over_mqtt():
    """In cluster mode readings come from JetStream: the MQTT connection (alerts and states) has no
    static partition and subscribes to no readings (each reading would be scored twice)."""
    s = settings(cluster=["nats://a:4222"])
    assert s.static_partitions() == () and s.readings_filters() == ()
    assert settings(partition=["site-a/#"]).readings_filters() == ("sensors/site-a/#",)


def test_print_config_hides_credentials_put_in_the_broker_url():
    """``serve --print-config`` shows the settings beside their problems: a broker URL with a user
    and password in it is a problem, and its password is not printed with it."""
    s, problems = merge_settings({**BASE, "broker": "mqtt://user:secret@broker.local"}, {}, require_model=False)
    assert any("credentials" in p for p in problems)
    assert "secret" not in str(s.redacted())


def test_a_leftover_sensorguard_password_beside_a_working_password_file_is_no_reason_to_refuse(tmp_path: Path):
    """``SENSORGUARD_PASSWORD`` alone would send no password (refused); beside a password file that
    works it changes nothing and the start goes on."""
    path = tmp_path / "pw"
    path.write_text("secret\n", encoding="utf-8")
    path.chmod(0o600)
    s = load_settings({**BASE, "username": "u", "password_file": str(path)}, {"SENSORGUARD_PASSWORD": "old"},
                      require_model=False)
    assert s.password() == "secret"
    _, problems = merge_settings({**BASE, "username": "u"}, {"SENSORGUARD_PASSWORD": "old"}, require_model=False)
    assert any("SENSORGUARD_PASSWORD: unknown setting" in p for p in problems)


def test_model_or_registry_the_higher_layer_wins_whichever_part_of_the_pair_it_is(tmp_path: Path):
    """``model`` and ``registry``+``name`` are alternatives; the one set at the higher layer (flags >
    environment > file) wins, the pair counting at the highest layer either of its names is set
    at, a ``name`` alone too (a leftover variable must not block ``--model``)."""
    bundle, registry = tmp_path / "bundle", tmp_path / "registry"
    bundle.mkdir()
    registry.mkdir()
    env_pair = {"SENSORGUARD_REGISTRY": str(registry), "SENSORGUARD_NAME": "pumps"}
    s = load_settings({"model": str(bundle), "metrics_port": 0}, env_pair)
    assert (s.model, s.registry, s.name) == (str(bundle), None, None)
    s = load_settings({"model": str(bundle), "metrics_port": 0}, {"SENSORGUARD_NAME": "pumps"})
    assert (s.model, s.name) == (str(bundle), None)
    config = tmp_path / "sg.toml"
    config.write_text(f'registry = "{registry}"\n', encoding="utf-8")
    s = load_settings({"name": "pumps", "metrics_port": 0}, {"SENSORGUARD_MODEL": str(bundle)}, config)
    assert (s.model, s.registry, s.name) == (None, str(registry), "pumps")


def test_a_config_file_that_is_not_utf8_is_one_problem_line(tmp_path: Path):
    """A config file saved in another encoding is reported as a problem, like an unreadable one, not
    a traceback."""
    config = tmp_path / "latin1.toml"
    config.write_bytes('topic_prefix = "caf\xe9"\n'.encode("latin-1"))
    _, problems = merge_settings(BASE, {}, config, require_model=False)
    assert len(problems) == 1 and problems[0].startswith(f"config file {config}: cannot read")


def test_an_empty_sensorguard_table_in_a_shared_file_is_still_our_table(tmp_path: Path):
    """A shared file with an empty ``[sensorguard]`` table (all defaults) leaves the other tables
    alone; a top-level ``sensorguard`` that is no table is an unknown setting, not a crash."""
    config = tmp_path / "shared.toml"
    config.write_text('[sensorguard]\n\n[other_tool]\nport = 1\n', encoding="utf-8")
    s, problems = merge_settings(BASE, {}, config, require_model=False)
    assert problems == [] and s.topic_prefix == "sensors"
    config.write_text('sensorguard = "x"\n', encoding="utf-8")
    _, problems = merge_settings(BASE, {}, config, require_model=False)
    assert problems == [f"config file {config}: sensorguard: unknown setting"]
