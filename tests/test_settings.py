"""Settings come from the environment once, and bad ones fail at boot with the variable's name."""
import pytest

from config.settings import Settings, SettingsError

PRODUCTION = {"LINE_CHANNEL_SECRET": "s", "LINE_CHANNEL_ACCESS_TOKEN": "t", "REDIS_URL": "redis://r:6379"}


def test_production_is_the_default_and_refuses_to_boot_without_its_secrets():
    with pytest.raises(SettingsError, match="LINE_CHANNEL_SECRET, LINE_CHANNEL_ACCESS_TOKEN, REDIS_URL"):
        Settings.from_env({})


def test_local_mode_runs_against_the_apps_own_line_sink_only_when_asked_for():
    settings = Settings.from_env({"BOT_MODE": "local", "PORT": "9001"})
    assert settings.is_local
    assert settings.line_api_base_url == "http://127.0.0.1:9001/local/line-api"
    assert settings.redis_url == "" and settings.trusted_proxy_hops == 0


def test_production_has_no_default_operator_secret_key_or_local_stand_in():
    settings = Settings.from_env(PRODUCTION)
    assert (settings.console_operators, settings.secret_key, settings.metrics_token) == ("", "", "")
    assert settings.trusted_proxy_hops == 1 and "/local/" not in settings.line_api_base_url


def test_production_without_secrets_fails_naming_each_missing_one():
    with pytest.raises(SettingsError) as raised:
        Settings.from_env({"BOT_MODE": "production", "LINE_CHANNEL_SECRET": "s"})
    message = str(raised.value)
    assert "LINE_CHANNEL_ACCESS_TOKEN" in message and "REDIS_URL" in message
    assert "LINE_CHANNEL_SECRET," not in message


def test_production_with_its_secrets_talks_to_line_itself(tmp_path):
    token_file = tmp_path / "token"
    token_file.write_text("secret-token\n")
    settings = Settings.from_env({"BOT_MODE": "production", "LINE_CHANNEL_SECRET": "s",
                                  "LINE_CHANNEL_ACCESS_TOKEN_FILE": str(token_file), "REDIS_URL": "redis://r:6379"})
    assert settings.line_channel_access_token == "secret-token"
    assert settings.line_api_base_url == "https://api.line.me"


@pytest.mark.parametrize("env,match", [
    ({"HANDOFF_AFTER_MISSES": "two"}, "HANDOFF_AFTER_MISSES must be a int"),
    ({"NLU_ANSWER_THRESHOLD_EN": "-1"}, "NLU_ANSWER_THRESHOLD_EN must be at least 0"),
    ({"LOG_REDACT": "maybe"}, "LOG_REDACT must be true or false"),
    ({"BOT_MODE": "staging"}, "BOT_MODE must be 'local' or 'production'"),
    ({"NLU_CLARIFY_THRESHOLD_JA": "0.99", "NLU_ANSWER_THRESHOLD_JA": "0.9"}, "_JA must not exceed"),
    ({"JOB_RETRY_INTERVALS": "1,x"}, "JOB_RETRY_INTERVALS"),
    ({"NLU_OUTSIDE_FILE": "/no/such/outside.txt"}, "NLU_OUTSIDE_FILE: no file /no/such/outside.txt"),
    ({"NLU_MAX_CHARS": "0"}, "NLU_MAX_CHARS must be at least 1"),
])
def test_a_bad_value_is_refused_with_the_variables_name(env, match):
    with pytest.raises(SettingsError, match=match):
        Settings.from_env({**PRODUCTION, **env})


def test_values_are_read_with_their_types():
    settings = Settings.from_env({**PRODUCTION, "LOG_REDACT": "false", "NLU_TOP_K": "5", "JOB_RETRY_INTERVALS": "1,2"})
    assert (settings.log_redact, settings.nlu_top_k, settings.job_retry_intervals) == (False, 5, (1, 2))


def test_the_cross_encoder_runs_only_where_its_weights_are(tmp_path):
    assert not Settings.from_env(PRODUCTION).reranker_enabled  # none ships yet
    assert not Settings.from_env({**PRODUCTION, "NLU_RERANKER_DIR": "off"}).reranker_enabled
    with pytest.raises(SettingsError, match="NLU_RERANKER_DIR: no model.safetensors in"):
        Settings.from_env({**PRODUCTION, "NLU_RERANKER_DIR": str(tmp_path)})
    (tmp_path / "model.safetensors").write_bytes(b"")
    assert Settings.from_env({**PRODUCTION, "NLU_RERANKER_DIR": str(tmp_path)}).reranker_enabled


def test_the_cross_encoder_asks_for_pytorch_where_production_has_none(tmp_path, monkeypatch):
    import importlib.util

    found = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None if name == "torch" else found(name))
    with pytest.raises(SettingsError, match="requirements-train.txt"):
        Settings.from_env({**PRODUCTION, "NLU_RERANKER_DIR": str(tmp_path)})
