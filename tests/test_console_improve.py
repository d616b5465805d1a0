"""Improving the FAQ from the console, and the numbers on the dashboard."""
import base64
import csv
import io
import shutil
from datetime import datetime
from zoneinfo import ZoneInfo

import numpy as np
import pytest
from rq import SimpleWorker

from bot.app import create_app
from bot.console.improve import group
from bot.unanswered import pack, unpack
from bot.worker import build_worker_services, reload_faq
from config.settings import PROJECT_ROOT
from nlu import Nlu, policies_from
from bot.faq_overlay import FaqOverlay
from tests.conftest import form, line_event, post_events, same_policies, sign_in


def item(item_id, text, vector, lang="ja"):
    return {"id": item_id, "text": text, "lang": lang, "vector": pack(vector), "suggestions": [], "ts": 0}


def test_near_duplicate_questions_are_grouped_and_different_ones_are_not():
    a, b, c = [1.0, 0.0, 0.0], [0.99, 0.05, 0.0], [0.0, 1.0, 0.0]
    groups = group([item("1", "x", a), item("2", "y", b), item("3", "z", c), item("4", "w", a, lang="en")])
    assert sorted(len(g["items"]) for g in groups) == [1, 1, 2]
    assert groups[0]["ids"] == "1,2"


@pytest.fixture
def small_worker(tmp_path, settings, redis, nlu, line_api, slack_api):
    """A worker over a copy of two FAQ files, reading operator-accepted alternates from Redis."""
    for name in ("costs.yaml", "qr_code.yaml"):
        shutil.copy(PROJECT_ROOT / "faq_data" / name, tmp_path)
    local = settings.replace(faq_dir=str(tmp_path))
    small = Nlu(tmp_path, policies_from(local), nlu.embedder, overlay=FaqOverlay(redis).snapshot)
    services = build_worker_services(local, redis=redis, nlu=small)
    services.run = lambda: SimpleWorker([services.queue], connection=redis).work(burst=True)
    return services


def test_an_attached_alternate_makes_the_bot_answer_that_phrasing(operator, small_worker, line_api, monkeypatch):
    question = "ポスター代は市が出してくれるの？うちのお店プリンターがないんだけど"
    monkeypatch.setattr(small_worker.dialogue.nlu, "policies", same_policies(0.999, 0.0, 0.0))  # only near-exact matches answer
    post_events(operator, line_event(text=question, user="Uimprove"))
    small_worker.run()
    assert line_api.sent()[0].body["messages"][0]["altText"].startswith("もしかして")

    page = operator.get("/console/unanswered").get_data(as_text=True)
    assert question in page and "cost-printing" in page
    [pending] = small_worker.unanswered.items()
    operator.post("/console/unanswered/attach", data=form(operator, item=pending["id"], faq_id="cost-printing"))
    assert small_worker.unanswered.items() == []

    reload_faq(small_worker)  # the worker reloads the FAQ with the accepted phrasing
    line_api.reset()
    post_events(operator, line_event(text=question, user="Uimprove"))
    small_worker.run()
    answer = small_worker.dialogue.nlu.faq.get("cost-printing").text("ja").answer
    assert line_api.sent()[0].body["messages"][0]["text"].startswith(answer)

    diff = operator.get("/console/unanswered/patch").get_data(as_text=True)
    assert diff.startswith("--- a/") and f'+        - "{question}"' in diff


def test_dismissed_questions_leave_the_queue(operator, worker):
    worker.unanswered.add("line", "U1", "天気は？", "ja", "fallback", [], [1.0, 0.0])
    [pending] = worker.unanswered.items()
    operator.post("/console/unanswered/dismiss", data=form(operator, ids=pending["id"]))
    assert worker.unanswered.items() == []


def test_attaching_to_an_unknown_entry_is_refused(operator, worker):
    worker.unanswered.add("line", "U1", "天気は？", "ja", "fallback", [], [1.0, 0.0])
    [pending] = worker.unanswered.items()
    response = operator.post("/console/unanswered/attach", data=form(operator, item=pending["id"], faq_id="nope"),
                             follow_redirects=True)
    assert "existing FAQ entry" in response.get_data(as_text=True)
    assert len(worker.unanswered.items()) == 1


def test_the_dashboard_counts_resolution_feedback_and_response_time(operator, worker, nlu, monkeypatch):
    post_events(operator, line_event(text=nlu.faq.get("visitor-register").text("ja").question, user="Uok"))
    post_events(operator, line_event(kind="postback", user="Uok", data="a=feedback&faq=visitor-register&v=up&lang=ja"))
    worker.run()
    monkeypatch.setattr(worker.dialogue.nlu, "policies", same_policies(2.0, 0.0, 2.0))
    for text in ("粗大ごみは？", "図書館は？"):
        post_events(operator, line_event(text=text, user="Ulost"))
        worker.run()
    page = operator.get("/console/dashboard").get_data(as_text=True)
    assert '<b id="resolved">50%</b>' in page  # one of two conversations needed a person
    assert "👍 1 · 👎 0" in page and "visitor-register" in page and "粗大ごみは？" in page
    rows = dict(csv.reader(io.StringIO(operator.get("/console/dashboard.csv").get_data(as_text=True).lstrip("\ufeff"))))
    assert rows["conversations"] == "2" and rows["messages"] == "3" and float(rows["response_ms_p50"]) >= 0
    today = datetime.now(ZoneInfo(operator.application.extensions["bot"].settings.timezone)).date()
    assert rows[f"messages {today.isoformat()}"] == "3"  # the city's day: from 15:00 UTC it is tomorrow in Japan
    conversations = operator.get("/console/conversations.csv").get_data(as_text=True)
    assert "図書館は？" in conversations and "Ulost" not in conversations


def test_the_unanswered_queue_forgets_old_questions_and_stays_bounded(redis, monkeypatch):
    from bot import unanswered

    queue = unanswered.Unanswered(redis, retention_days=1)
    old = queue.add("line", "U1", "古い質問", "ja", "fallback", [], [1.0, 0.0])
    redis.zadd("unanswered:order", {old: 0})  # as if logged long ago
    monkeypatch.setattr(unanswered, "MAX_ITEMS", 2)
    for text in ("一", "二", "三"):
        queue.add("line", "U1", text, "ja", "fallback", [], [1.0, 0.0])
    assert sorted(i["text"] for i in queue.items()) == ["三", "二"]


def test_a_question_marked_not_ours_is_no_longer_answered_outright(operator, small_worker, monkeypatch):
    from nlu import ANSWER, CLARIFY

    question = "粗大ごみの収集を申し込みたい"  # another department's: the copied FAQ is about costs and QR codes
    nlu = small_worker.dialogue.nlu
    monkeypatch.setattr(nlu, "policies", same_policies(0.0, 0.0, 0.0))  # anything would be answered
    assert nlu.answer(question, "ja").kind == ANSWER
    small_worker.unanswered.add("line", "U1", question, "ja", "clarified", [], [1.0, 0.0])
    [pending] = small_worker.unanswered.items()
    page = operator.post("/console/unanswered/not-ours", data=form(operator, ids=pending["id"]), follow_redirects=True)
    assert "Marked 1 question(s)" in page.get_data(as_text=True) and small_worker.unanswered.items() == []

    reload_faq(small_worker)  # the worker reloads the FAQ with the marked question
    decision = nlu.answer(question, "ja")
    assert decision.kind == CLARIFY and decision.outside > decision.top.score
    assert nlu.status()["outside_questions"] == 1
    assert operator.get("/console/unanswered/outside.txt").get_data(as_text=True) == question + "\n"


def test_once_the_downloads_are_in_the_files_operators_clear_what_redis_kept(operator, worker):
    worker.overlay.add("cost-printing", "ja", "ポスター代は？")
    worker.overlay.add_outside(["粗大ごみの収集を申し込みたい"])
    page = operator.get("/console/unanswered").get_data(as_text=True)
    assert "Downloads applied to the files" in page
    version = worker.overlay.snapshot()[0]
    operator.post("/console/unanswered/clear", data=form(operator))
    assert worker.overlay.snapshot() == (version + 1, {}, ())  # a new version: the worker reloads from the files
    assert "Downloads applied to the files" not in operator.get("/console/unanswered").get_data(as_text=True)


def test_a_kept_embedding_points_where_the_models_did_within_a_thousandth():
    vectors = np.random.default_rng(3).normal(size=(50, 384)).astype(np.float32)
    for vector in vectors:
        kept = unpack(pack(vector))
        assert float(kept @ vector / np.linalg.norm(kept) / np.linalg.norm(vector)) > 0.999
    earlier = base64.b64encode(vectors[0].astype(np.float16).tobytes()).decode()  # as kept before
    assert np.allclose(unpack(earlier), vectors[0], atol=1e-2)


def test_the_queue_names_its_suggestions_by_the_faq_in_service(operator, worker, nlu):
    question = nlu.faq.get("visitor-register").text("ja").question
    worker.unanswered.add("line", "U1", "登録のことで", "ja", "clarify", ["visitor-register", "gone-entry"], [1.0] * 384)
    page = operator.get("/console/unanswered").get_data(as_text=True)
    assert f"visitor-register — {question}" in page and "gone-entry — (not in the FAQ now)" in page


def test_while_the_faq_files_are_broken_every_page_says_so_and_attaching_still_works(settings, redis, tmp_path,
                                                                                   small_worker):
    for name in ("costs.yaml", "qr_code.yaml"):
        shutil.copy(PROJECT_ROOT / "faq_data" / name, tmp_path)
    client = create_app(settings.replace(faq_dir=str(tmp_path)), redis=redis).test_client()
    sign_in(client)
    assert "The FAQ files are broken" not in client.get("/console/unanswered").get_data(as_text=True)
    broken = (tmp_path / "costs.yaml").read_text(encoding="utf-8").replace("category:", "kategorie:", 1)
    (tmp_path / "costs.yaml").write_text(broken, encoding="utf-8")
    for path in ("/console/conversations", "/console/waiting", "/console/unanswered", "/console/dashboard"):
        page = client.get(path).get_data(as_text=True)
        assert "The FAQ files are broken</b>: costs.yaml: entry" in page and "field kategorie: unknown field" in page
    item = small_worker.unanswered.add("line", "U1", "ポスター代は？", "ja", "clarify", ["cost-printing"], [1.0] * 384)
    done = client.post("/console/unanswered/attach", data=form(client, item=item, faq_id="cost-printing"),
                       follow_redirects=True).get_data(as_text=True)
    assert "Added 1 phrasing(s) to cost-printing" in done
    assert small_worker.overlay.snapshot()[1] == {("cost-printing", "ja"): ["ポスター代は？"]}


def test_attaching_before_any_good_version_was_read_says_why_it_cannot(settings, redis, tmp_path, worker):
    (tmp_path / "broken.yaml").write_text("entries: [", encoding="utf-8")
    client = create_app(settings.replace(faq_dir=str(tmp_path)), redis=redis).test_client()
    sign_in(client)
    item = worker.unanswered.add("line", "U1", "ポスター代は？", "ja", "clarify", [], [1.0] * 384)
    page = client.post("/console/unanswered/attach", data=form(client, item=item, faq_id="cost-printing"),
                       follow_redirects=True).get_data(as_text=True)
    assert "attaching waits until they are fixed" in page and "broken.yaml" in page
