"""Everything the bot says that is not an FAQ answer, in Japanese and English.

Kept in one place so a city can reword it without reading the dialogue code.
"""
from __future__ import annotations

TEXTS = {
    "ja": {
        "official_page": "詳しくはこちら",
        "helpful": "👍 役に立った",
        "not_helpful": "👎 役に立たなかった",
        "did_you_mean": "もしかして、次のどれかについてのご質問ですか？番号のボタンを選んでください。",
        "none_of_these": "どれでもない",
        "more_choices": "では、次のどれかについてのご質問ですか？番号のボタンを選んでください。",
        "instead": "ご意見ありがとうございます。もしかして、次のどれかについてのご質問でしたか？番号のボタンを選んでください。",
        "fallback": (
            "申し訳ありません。そのご質問にお答えできる情報が見つかりませんでした。"
            "言い方を変えて、もう一度送ってみてください。\n"
            "お急ぎの方はコールセンター（{phone}、平日9時〜18時）または {url} をご利用ください。"
        ),
        "elsewhere": (
            "申し訳ありません。このアカウントはQR追跡システムについてのご質問にお答えしています。"
            "そのほかの市のご用件は、市の総合案内（{city_phone}）または {city_url} へお問い合わせください。"
        ),
        "elsewhere_did_you_mean": (
            "このアカウントはQR追跡システムについてのご質問にお答えしています。"
            "そのほかの市のご用件は、市の総合案内（{city_phone}）または {city_url} へ。"
            "QR追跡システムについてでしたら、次のどれかですか？番号のボタンを選んでください。"
        ),
        "handoff": (
            "うまくお答えできず申し訳ありません。担当の職員に引き継ぎました。"
            "受付時間内（平日9時〜18時）にこのトークで職員からお返事します。\n"
            "お急ぎの方はコールセンター（{phone}）へお電話ください。"
        ),
        "waiting": (
            "職員からのお返事をお待ちください。受付時間内（平日9時〜18時）にこのトークでお返事します。"
            "お急ぎの方はコールセンター（{phone}）へお電話ください。"
        ),
        "thanks_up": "ありがとうございます！ほかにもご質問があればどうぞ。",
        "thanks_down": (
            "ご意見ありがとうございます。回答の改善に役立てます。"
            "言い方を変えて質問していただくか、コールセンター（{phone}）へお問い合わせください。"
        ),
        "text_only": "申し訳ありません。文字のメッセージにだけお答えできます。ご質問を文章で送ってください。",
        "words_only": "ご質問を言葉で送ってください。絵文字や数字、記号だけではお答えできません。",
    },
    "en": {
        "official_page": "More information",
        "helpful": "👍 Helpful",
        "not_helpful": "👎 Not helpful",
        "did_you_mean": "Did you mean one of these? Tap a number.",
        "none_of_these": "None of these",
        "more_choices": "Then is it one of these? Tap a number.",
        "instead": "Thank you for telling us. Did you perhaps mean one of these? Tap a number.",
        "fallback": (
            "Sorry, I couldn't find an answer to that question. Please try asking in other words.\n"
            "If it is urgent, call {phone} (weekdays 9:00–18:00) or see {url}"
        ),
        "elsewhere": (
            "Sorry, this account answers questions about the city's QR tracing system. For other city matters, "
            "please contact the city's general information line ({city_phone}) or see {city_url}"
        ),
        "elsewhere_did_you_mean": (
            "This account answers questions about the city's QR tracing system; for other city matters, contact "
            "the general information line ({city_phone}) or see {city_url}\n"
            "If it is about QR tracing, did you mean one of these? Tap a number."
        ),
        "handoff": (
            "Sorry I couldn't help. I have passed your question to a member of staff, "
            "who will reply in this chat during office hours (weekdays 9:00–18:00).\n"
            "If it is urgent, please call {phone}."
        ),
        "waiting": (
            "A member of staff will reply in this chat during office hours (weekdays 9:00–18:00). "
            "If it is urgent, please call {phone}."
        ),
        "thanks_up": "Thank you! Ask me anything else about the QR tracing system.",
        "thanks_down": (
            "Thank you for telling us; we will use it to improve our answers. "
            "Try asking in other words, or call {phone}."
        ),
        "text_only": "Sorry, I can only read text messages. Please type your question.",
        "words_only": "Please type your question in words: I cannot answer an emoji, a number or a sign on its own.",
    },
}

GREETING = (
    "友だち追加ありがとうございます。QR追跡システムについてのご質問に自動でお答えします。"
    "日本語でも英語でも、文章で送ってください。\n"
    "Thank you for adding us! I answer questions about the city's QR tracing system, "
    "in Japanese or English. Just type your question.\n\n"
    "例 / Examples:\n{examples}"
)


def say(lang: str, key: str, **values) -> str:
    """The text ``key`` in ``lang`` (English when the language is unknown)."""
    return TEXTS.get(lang, TEXTS["en"])[key].format(**values)


def both(key: str, **values) -> str:
    """The text in both languages, for when we do not know the resident's yet."""
    return say("ja", key, **values) + "\n" + say("en", key, **values)
