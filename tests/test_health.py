"""/healthz is green only with Redis, a live worker and an FAQ."""
from bot.app import create_app
from bot.worker import beat


def test_healthz_is_503_until_a_worker_has_reported(client):
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["worker"] == "no heartbeat"


def test_healthz_is_200_once_the_worker_beats(client, worker):
    beat(worker)
    body = client.get("/healthz").get_json()
    assert body["ok"] is True and body["faq_entries"] >= 40 and body["redis"] == "ok"
    assert body["faq_index"] == "complete" and body["outside_questions"] == 0


def test_healthz_is_503_when_redis_is_unreachable(settings):
    client = create_app(settings.replace(redis_url="redis://127.0.0.1:1/0")).test_client()
    response = client.get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["redis"].startswith("unreachable")
