"""/metrics: Prometheus text behind a bearer token, with the web's and the worker's numbers."""
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.app import create_app
from bot.worker import report
from tests.conftest import line_event, post_events

TOKEN = "scrape-me"


@pytest.fixture
def scraped(settings, redis):
    """The app with METRICS_TOKEN set, and a function that scrapes it into {(name, labels): value}."""
    client = create_app(settings.replace(metrics_token=TOKEN), redis=redis).test_client()

    def scrape() -> dict:
        response = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200
        return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
                for family in text_string_to_metric_families(response.get_data(as_text=True))
                for sample in family.samples}

    client.scrape = scrape
    return client


def test_metrics_are_404_while_no_token_is_set(client):
    assert client.get("/metrics").status_code == 404


@pytest.mark.parametrize("header", [None, "Bearer wrong", f"Basic {TOKEN}", TOKEN])
def test_metrics_need_the_bearer_token(scraped, header):
    response = scraped.get("/metrics", headers={"Authorization": header} if header else {})
    assert response.status_code == 401 and response.headers["WWW-Authenticate"].startswith("Bearer")


def test_a_conversation_shows_in_the_metrics(scraped, worker, line_api):
    before = scraped.scrape()
    post_events(scraped, line_event(text="QRコードの登録はどうすればいいですか？", user="Umetrics"))
    post_events(scraped, line_event(text="What should I do after an alert?", user="Umetrics2"))
    post_events(scraped, line_event(text="forged"), signature="bad")
    waiting = scraped.scrape()
    assert waiting[("bot_queue_depth", ())] == 2 and waiting[("bot_queue_oldest_age_seconds", ())] > 0
    worker.run()
    report(worker, "worker-1")
    after = scraped.scrape()

    def grew(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)

    assert grew("bot_webhook_requests_total", platform="line", status="200") == 2
    assert grew("bot_webhook_requests_total", platform="line", status="401") == 1
    assert grew("bot_webhook_ack_seconds_count", platform="line") == 3
    decisions = {labels: value for (name, labels), value in after.items() if name == "bot_decisions_total"}
    assert sum(decisions.values()) == 2 and {dict(labels)["lang"] for labels in decisions} == {"ja", "en"}
    assert after[("bot_nlu_seconds_count", ())] == 2 and after[("bot_reply_seconds_count", ())] == 2
    assert after[("bot_nlu_seconds_bucket", (("le", "+Inf"),))] == 2
    assert after[("bot_queue_depth", ())] == 0 and after[("bot_workers_alive", ())] == 1


def test_send_failures_are_counted_by_kind(scraped, worker, line_api):
    line_api.fail_next(400)
    post_events(scraped, line_event(text="QRコードの登録はどうすればいいですか？", user="Urefused"))
    worker.run()
    after = scraped.scrape()
    assert after[("bot_send_failures_total", (("kind", "permanent"), ("platform", "line")))] == 1
    assert after[("bot_jobs_failed", ())] == 0  # a permanent refusal is logged, not retried
