"""End to end in a real headless Chromium: an operator's day in the console.

Needs Debian's chromium (``scripts/test`` installs it where it can); skipped
with a clear reason only when no browser is available.
"""
import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from rq import SimpleWorker
from werkzeug.serving import make_server

from bot.app import create_app
from bot.worker import build_worker_services
from config.settings import PROJECT_ROOT

from tests.conftest import OPERATOR_PASSWORD, line_event, post_events, same_policies

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = PROJECT_ROOT / "test-artifacts"
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium: `apt-get install -y chromium` (scripts/test tries)")


@pytest.fixture
def served(settings, redis, nlu, line_api):
    """The app on loopback (threaded, as gunicorn's gthread workers are) and a worker to drain the queue."""
    app = create_app(settings, redis=redis)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    services = build_worker_services(settings, redis=redis, nlu=nlu)
    yield f"http://127.0.0.1:{server.server_port}", app.test_client(), services
    server.shutdown()


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=[
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run", "--disable-sync"])
        yield browser.new_page(viewport={"width": 1280, "height": 900})
        browser.close()


def drain(services):
    SimpleWorker([services.queue], connection=services.redis).work(burst=True)


def open_console(page, url):
    """Sign in through the form and wait for the list's live badge."""
    page.goto(f"{url}/console/conversations")
    page.fill("input[name=name]", "sato")
    page.fill("input[name=password]", OPERATOR_PASSWORD)
    page.click("button:has-text('Sign in')")
    page.wait_for_selector("text=● live")


def test_an_operator_watches_takes_over_replies_hands_back_and_improves_the_faq(served, page, line_api, monkeypatch):
    url, webhook, services = served
    ARTIFACTS.mkdir(exist_ok=True)
    open_console(page, url)

    # A resident's message appears in the list without reloading.
    monkeypatch.setattr(services.dialogue.nlu, "policies", same_policies(2.0, 0.0, 0.5))  # clarify: lands in "unanswered"
    question = "お店のポスターの印刷代って自腹ですか？"
    started = time.perf_counter()
    post_events(webhook, line_event(text=question, user="Ubrowser"))
    drain(services)
    logged = time.perf_counter()
    page.wait_for_selector(f"#rows >> text={question}", timeout=10_000)
    shown = time.perf_counter()
    (ARTIFACTS / "live_list_latency.json").write_text(json.dumps(
        {"webhook_to_row_s": shown - started, "log_write_to_row_s": shown - logged}, indent=2))

    # Take over and reply as the account.
    page.click(f"#rows >> text={question} >> xpath=ancestor::tr//a")
    page.click("button:has-text('Take over')")
    # A resident's message shows up live while the operator types: the draft stays.
    page.fill("textarea[name=text]", "担当の佐藤です。")
    post_events(webhook, line_event(text="まだですか？", user="Ubrowser"))
    drain(services)
    page.wait_for_selector("#turns >> text=まだですか？", timeout=10_000)
    assert page.input_value("textarea[name=text]") == "担当の佐藤です。"
    page.fill("textarea[name=text]", "担当の佐藤です。印刷代についてご案内します。")
    page.click("button:has-text('Send')")
    drain(services)
    [push] = line_api.sent("/push")
    assert push.body["messages"][0]["text"] == "担当の佐藤です。印刷代についてご案内します。"
    page.wait_for_selector(".turn.out.operator >> text=担当の佐藤です。印刷代についてご案内します。")  # live
    page.screenshot(path=str(ARTIFACTS / "transcript.png"), full_page=True)

    # Hand back: the bot answers this resident again.
    page.click("button:has-text('Hand back to the bot')")
    page.wait_for_selector("text=the bot is answering")
    assert services.handover.operator_of("line", "Ubrowser") is None

    # Accept the unanswered question as an alternate of the printing-costs entry.
    page.click("nav >> text=Unanswered")
    page.wait_for_selector(f"text={question}")
    page.select_option("select[name=faq_id]", "cost-printing")
    page.click("button:has-text('Attach as alternate')")
    page.wait_for_selector("text=Added 1 phrasing(s) to cost-printing")
    assert services.overlay.snapshot()[1] == {("cost-printing", "ja"): [question]}

    page.click("nav >> text=Dashboard")
    page.wait_for_selector("#resolved")
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)
    assert Path(ARTIFACTS / "dashboard.png").stat().st_size > 10_000


def test_a_page_whose_session_expired_stops_polling_and_asks_to_sign_in_again(served, page):
    url, _, _ = served
    open_console(page, url)
    page.context.clear_cookies()
    page.wait_for_selector("#live >> text=signed out: sign in again", timeout=10_000)
    polls = []
    page.on("request", lambda request: polls.append(request.url) if "/console/changes" in request.url else None)
    page.wait_for_timeout(3_000)
    assert polls == []


def test_a_resident_reads_a_did_you_mean_whole_and_taps_a_row_on_the_local_chat_page(settings, redis, nlu, page,
                                                                                     monkeypatch):
    holder = {}
    server = make_server("127.0.0.1", 0, lambda env, start: holder["app"](env, start), threaded=True)
    url = f"http://127.0.0.1:{server.server_port}"
    local = settings.replace(line_api_base_url=f"{url}/local/line-api")
    holder["app"] = create_app(local, redis=redis)
    services = build_worker_services(local, redis=redis, nlu=nlu)
    monkeypatch.setattr(nlu, "policies", same_policies(2.0, 0.0, 0.0))  # unsure of everything: "did you mean…"
    threading.Thread(target=server.serve_forever, daemon=True).start()

    def answered(condition):
        """Run the worker (here, in the main thread, as RQ needs) until the page shows ``condition``."""
        deadline = time.monotonic() + 15
        while not condition():
            assert time.monotonic() < deadline, "the page never showed the answer"
            drain(services)
            time.sleep(0.2)

    try:
        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        page.goto(url + "/")
        page.fill("#text", "How do I register my shop's QR code?")
        page.press("#text", "Enter")
        rows = page.locator(".bot .bubble .row")
        answered(lambda: rows.count() == 4)
        labels = rows.all_inner_texts()
        assert labels[0].startswith("1. ") and labels[3] == "None of these" and not any(l.endswith("…") for l in labels)
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "chat_did_you_mean_rows.png"), full_page=True)
        question = labels[0][3:]
        entry = next(e for e in nlu.faq.entries if e.text("en").question == question)
        rows.nth(0).click()
        page.wait_for_selector(f".user .bubble >> text={question}")
        answer = page.locator(".bot .bubble", has_text=entry.text("en").answer[:40])
        answered(lambda: answer.count() == 1)
    finally:
        server.shutdown()


def test_a_tablet_console_shows_taps_in_words_the_citys_clock_a_broken_faq_and_attaches_whole_groups(
        settings, redis, nlu, page, tmp_path):
    from zoneinfo import ZoneInfo

    from datetime import datetime

    faq_dir = tmp_path / "faq"
    shutil.copytree(PROJECT_ROOT / "faq_data", faq_dir)
    app = create_app(settings.replace(faq_dir=str(faq_dir)), redis=redis)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url, webhook = f"http://127.0.0.1:{server.server_port}", app.test_client()
    services = build_worker_services(settings, redis=redis, nlu=nlu)
    try:
        page.set_viewport_size({"width": 768, "height": 1024})
        open_console(page, url)
        question = nlu.faq.get("visitor-register").text("en").question
        post_events(webhook, line_event(kind="postback", user="Utablet", data="a=feedback&faq=visitor-register&v=up&lang=en"))
        drain(services)
        page.wait_for_selector(f"#rows >> text=👍 on {question}", timeout=10_000)  # a tap, in words

        page.click(f"#rows >> text=👍 on {question} >> xpath=ancestor::tr//a")
        [turn] = [t for t in services.convlog.conversation("line", "Utablet") if t["direction"] == "in"]
        tokyo = datetime.fromtimestamp(int(turn["ts"]) / 1000, ZoneInfo("Asia/Tokyo")).strftime("%Y-%m-%d %H:%M:%S")
        page.wait_for_selector(f".turn.in .meta >> text={tokyo}")  # the city's clock, not the server's

        for n in range(3):  # one question asked three times: one group of 3
            services.unanswered.add("line", f"Ugroup{n}", "ポスターは何枚もらえますか", "ja", "clarify",
                                    ["cost-printing"], [1.0] * 384)
        (faq_dir / "costs.yaml").write_text("entries: [", encoding="utf-8")  # an edit gone wrong
        page.click("nav >> text=Unanswered")
        page.wait_for_selector(".banner >> text=The FAQ files are broken")
        assert "costs.yaml" in page.inner_text(".banner")
        page.wait_for_selector("text=3×")
        for path in ("conversations", "waiting", "unanswered", "dashboard", "c/line/Utablet"):  # at 768 px: nothing sideways
            page.goto(f"{url}/console/{path}")
            assert page.evaluate("document.documentElement.scrollWidth") <= 768, path
        page.screenshot(path=str(ARTIFACTS / "console_768_dashboard.png"), full_page=True)
        page.goto(f"{url}/console/unanswered")
        page.select_option("select[name=faq_id]", "cost-printing")
        page.click("button:has-text('Attach as alternate')")
        page.wait_for_selector("text=Added 1 phrasing(s) to cost-printing from 3 question(s)")
        assert services.unanswered.items() == []  # the whole group, not its first copy
        assert services.overlay.snapshot()[1] == {("cost-printing", "ja"): ["ポスターは何枚もらえますか"]}
    finally:
        server.shutdown()
