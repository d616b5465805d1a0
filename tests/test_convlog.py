"""The conversation log: a conversation's turns in a compact list, and turns kept in the earlier stream still
shown until they expire."""
import json

from bot.convlog import ConversationLog, turns_key


def test_turns_come_back_oldest_first_and_two_of_them_take_under_a_kilobyte(redis):
    log = ConversationLog(redis, retention_days=30, conversation_maxlen=3, global_maxlen=100, redact_text=True)
    log.append("line", "Ua", "in", "call me on 090-1234-5678", decision="answer", faq_id="qr-reissue", score=0.93)
    log.append("line", "Ua", "out", "Here is how", send_result="reply")
    turns = log.conversation("line", "Ua")
    assert [t["direction"] for t in turns] == ["in", "out"]
    assert turns[0]["text"] == "call me on [phone]" and turns[0]["score"] == "0.93" and turns[0]["faq_id"] == "qr-reissue"
    assert redis.memory_usage(turns_key("line", "Ua")) < 1000  # a stream took 4.7 KB for these two
    assert 0 < redis.ttl(turns_key("line", "Ua")) <= 30 * 86400
    for n in range(5):
        log.append("line", "Ua", "in", f"question {n}")
    assert [t["text"] for t in log.conversation("line", "Ua")] == ["question 2", "question 3", "question 4"]
    assert [t["text"] for t in log.conversation("line", "Ua", count=2)] == ["question 3", "question 4"]


def test_turns_kept_in_the_earlier_stream_come_first(redis):
    redis.xadd("log:conv:line:Ub", {"ts": 1, "direction": "in", "text": "before the change"})
    log = ConversationLog(redis, retention_days=30, conversation_maxlen=100, global_maxlen=100, redact_text=False)
    log.append("line", "Ub", "in", "after it")
    assert [t["text"] for t in log.conversation("line", "Ub")] == ["before the change", "after it"]


def test_a_reply_many_residents_get_is_kept_once_and_shown_whole_as_sent(redis):
    log = ConversationLog(redis, retention_days=30, conversation_maxlen=100, global_maxlen=100, redact_text=True)
    answer = "コールセンター（0120-123-456）までお電話ください。" * 10
    for user in ("Uc1", "Uc2", "Uc3"):
        log.append("line", user, "in", f"{user} です、090-1234-5678")
        log.append_reply("line", user, answer, ["1. はい", "2. いいえ"], send_result="reply")
    assert len(list(redis.scan_iter("log:reply:*"))) == 1
    turns = log.conversation("line", "Uc2")
    assert turns[0]["text"] == "Uc2 です、[phone]"  # the resident's number is hidden, the bot's is not
    assert turns[1]["text"] == answer and json.loads(turns[1]["choices"]) == ["1. はい", "2. いいえ"]
    assert turns[1]["send_result"] == "reply" and turns[1]["platform"] == "line" and turns[1]["user"] == "Uc2"
    assert redis.memory_usage(turns_key("line", "Uc3")) < 400  # the answer itself is not in each conversation
    assert [s["user"] for s in log.summaries()] == ["Uc3", "Uc2", "Uc1"]


def test_a_reply_kept_no_longer_shows_empty_rather_than_failing(redis):
    log = ConversationLog(redis, retention_days=30, conversation_maxlen=100, global_maxlen=100, redact_text=True)
    log.append_reply("line", "Ud", "gone soon", [], send_result="reply")
    for key in redis.scan_iter("log:reply:*"):
        redis.delete(key)
    assert log.conversation("line", "Ud")[0]["text"] == ""
