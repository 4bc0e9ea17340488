from __future__ import annotations

from pathlib import Path

import pytest

from steadyloop.demo.settings import DemoSettings
from steadyloop.settings import (
    Settings,
    SettingsError,
    collect_bulkhead_variables,
    redact_url,
    render_env_example,
)

ROOT = Path(__file__).resolve().parents[1]


def test_env_example_matches_settings() -> None:
    committed = (ROOT / ".env.example").read_text(encoding="utf-8")
    assert committed == render_env_example(), (
        ".env.example is out of date: run `make env-example` and commit it"
    )


def test_every_field_is_documented() -> None:
    for name, field in Settings.model_fields.items():
        assert field.description, f"Settings.{name} has no description"
        if not field.exclude:
            assert f"# {name.upper()}=" in render_env_example()


def test_defaults() -> None:
    settings = Settings()
    assert settings.worker_role == "all"
    assert settings.blocking_default_concurrency == 8
    assert settings.loop_stall_threshold_ms == 100
    # The library dedicates no domain by default; the demo's camera is the demo's setting.
    assert settings.dedicated_threads() == {}
    assert DemoSettings().dedicated_threads() == {"camera": 2}
    assert settings.bulkheads == {}


def test_domain_variables_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BLOCKING_DRIVE_CONCURRENCY", "3")
    monkeypatch.setenv("BLOCKING_DRIVE_MAX_WAIT", "1.5")
    monkeypatch.setenv("BLOCKING_SERIAL_PORT_THREADS", "1")
    monkeypatch.setenv("BLOCKING_DEFAULT_CONCURRENCY", "5")
    monkeypatch.setenv("BLOCKING_DEDICATED_DOMAINS", "camera:2")  # the list and _THREADS combine
    settings = Settings()
    assert settings.blocking_default_concurrency == 5
    assert settings.bulkheads["drive"].concurrency == 3
    assert settings.bulkheads["drive"].max_wait == 1.5
    assert "default" not in settings.bulkheads
    assert settings.dedicated_threads() == {"camera": 2, "serial_port": 1}


def test_dotenv_file_is_read_and_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text(
        "WORKER_ROLE=worker\nBLOCKING_FS_CONCURRENCY=2\nBLOCKING_CATALOG_CONCURRENCY=6\n"
    )
    monkeypatch.setenv("BLOCKING_CATALOG_CONCURRENCY", "7")
    settings = Settings()
    assert settings.worker_role == "worker"
    assert settings.bulkheads["fs"].concurrency == 2
    assert settings.bulkheads["catalog"].concurrency == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("WORKER_ROLE", "scheduler"),
        ("BLOCKING_DEFAULT_CONCURRENCY", "0"),
        ("BLOCKING_DRIVE_CONCURRENCY", "many"),
        ("BLOCKING_DRIVE_MAX_WAIT", "-1"),
        ("LOOP_STALL_THRESHOLD_MS", "0"),
    ],
)
def test_invalid_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"^invalid setting: {name}={value!r}: ") as caught:
        Settings()
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("spec", ["camera:zero", "Camera!:2", "camera:0"])
def test_invalid_dedicated_domains(spec: str) -> None:
    with pytest.raises(ValueError, match="BLOCKING_DEDICATED_DOMAINS"):
        Settings(blocking_dedicated_domains=spec).dedicated_threads()


def test_collect_ignores_unrelated_and_empty_values() -> None:
    found = collect_bulkhead_variables(
        {"BLOCKING_DRIVE_CONCURRENCY": "4", "BLOCKING_FS_CONCURRENCY": "", "PATH": "/bin"},
        {"blocking_drive_concurrency": "9"},
    )
    assert found == {"drive": {"concurrency": "9"}}


def test_every_setting_is_in_the_settings_docs() -> None:
    page = (ROOT / "docs" / "settings.md").read_text(encoding="utf-8")
    missing = [
        name.upper()
        for name, field in Settings.model_fields.items()
        if not field.exclude and f"`{name.upper()}`" not in page
    ]
    assert missing == [], f"docs/settings.md does not document {missing}"


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgresql://app:hunter2@db/main", "postgresql://app:***@db/main"),
        ("redis://h:6379/0?password=hunter2&db=1", "redis://h:6379/0?password=***&db=1"),
        (
            "postgresql://db/main?sslpassword=s&application_name=api",
            "postgresql://db/main?sslpassword=***&application_name=api",
        ),
        (
            "https://h/x?api_key=1&token=2&Access-Token=3&client_secret=4&key=5&secret=6",
            "https://h/x?api_key=***&token=***&Access-Token=***&client_secret=***&key=***&secret=***",
        ),
        ("https://u:p@h/x?access_token=abc#top", "https://u:***@h/x?access_token=***#top"),
        ("https://h/x?pass%77ord=leak", "https://h/x?pass%77ord=***"),  # percent-encoded name
        ("https://h/x?monkey=3&sortkey=a&page=2", "https://h/x?monkey=3&sortkey=a&page=2"),
        ("sqlite:///data/app.db", "sqlite:///data/app.db"),
        ("https://h/x?password=", "https://h/x?password="),  # nothing to hide
        ("http://[::1", "***"),  # not a URL: nothing of it is shown
    ],
)
def test_redact_url_hides_passwords_and_secret_query_parameters(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    for secret in ("hunter2", "leak", "abc"):
        assert secret not in redact_url(url)


def test_health_output_does_not_show_a_secret_query_parameter() -> None:
    settings = Settings(redis_url="redis://127.0.0.1:6379/0?password=hunter2", log_setup=False)
    summary = settings.summary()
    assert summary["redis_url"] == "redis://127.0.0.1:6379/0?password=***"
    assert "hunter2" not in str(summary)
