"""The dialogue manager: one incoming message and the state in, one reply and the new state out.

No Redis, no SDK: the job around it loads and stores state and sends the
reply, so every rule of the conversation can be read (and tested) here.
"""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace

from bot.messages import FOLLOW, POSTBACK, TEXT, UNFOLLOW, Choice, Incoming, Reply, encode_postback
from bot.replies import GREETING, both, say
from bot.state import ConversationState
from nlu import ANSWER, CLARIFY, LANGUAGES, detect_language
from nlu import HANDOFF as HANDOFF_INTENT

ANSWERED, CLARIFIED, FALLBACK, HANDOFF, WAITING = "answered", "clarified", "fallback", "handoff", "waiting"


@dataclass(frozen=True)
class Turn:
    """What happened on one incoming event, for sending and for the conversation log."""

    reply: Reply | None
    state: ConversationState | None  # None: forget the conversation
    decision: str = ""
    faq_id: str = ""
    score: float | None = None
    nlu_ms: float | None = None
    lang: str = ""
    suggestions: tuple = ()  # FAQ ids the NLU ranked highest, for the unanswered queue
    question: str = ""  # set when this turn should go to the unanswered queue


class Dialogue:
    def __init__(self, nlu, handoff_after_misses: int, fallback_phone: str, fallback_url: str, city_phone: str,
                 city_url: str, examples=()):
        self.nlu = nlu
        self.handoff_after_misses = handoff_after_misses
        self.contact = {"phone": fallback_phone, "url": fallback_url, "city_phone": city_phone, "city_url": city_url}
        self.examples = tuple(examples)

    def handle(self, incoming: Incoming, state: ConversationState) -> Turn:
        if incoming.kind == TEXT:
            return self._on_text(incoming.text, state)
        if incoming.kind == POSTBACK:
            return self._on_postback(incoming.data, state)
        if incoming.kind == FOLLOW:
            return Turn(self._greeting(), ConversationState(), decision="greeted")
        if incoming.kind == UNFOLLOW:
            return Turn(None, None, decision="unfollowed")
        text = say(state.lang, "text_only") if state.lang else both("text_only")
        return Turn(Reply(text), state, decision="unsupported", lang=state.lang)

    def while_staff_answer(self, incoming: Incoming, state: ConversationState) -> Turn:
        """An operator has taken the conversation over: the bot stays silent, the turn keeps its language."""
        lang = detect_language(incoming.text) if incoming.text else state.lang
        return Turn(None, state, decision="human", lang=lang)

    def in_words(self, incoming: Incoming) -> str:
        """What the resident did, as an operator reads it in the console and its exports: the text typed, the
        entry a tap chose ("Picked: …", "👍 on …"), or the kind of message the bot cannot read ("[sticker]")."""
        if incoming.kind == TEXT:
            return incoming.text
        if incoming.kind != POSTBACK:
            return f"[{incoming.detail.rsplit('/', 1)[-1]}]"
        data = incoming.data
        entry = self.nlu.faq.get(data.get("faq", ""))
        lang = data.get("lang") if data.get("lang") in LANGUAGES else "ja"
        question = entry.text(lang).question if entry else data.get("faq", "")
        action = data.get("a")
        if action == "select":
            return f"Picked: {question}"
        if action == "feedback":
            return f"{'👍' if data.get('v') == 'up' else '👎'} on {question}"
        if action == "none":
            return "None of these"
        if action == "ask":
            return f"Picked the example: {data.get('text', '')}"
        return "Tapped: " + ", ".join(f"{key}={value}" for key, value in sorted(data.items()))

    def _on_text(self, text: str, state: ConversationState) -> Turn:
        chosen = _chosen_number(text, state.pending)
        if chosen:  # "2" typed back to a "did you mean" list, where buttons are not at hand
            return self._on_postback({"a": "select", "faq": chosen, "lang": state.lang}, state)
        if not any(unicodedata.category(char).startswith("L") for char in text):
            # an emoji, a number or punctuation alone: nothing for the NLU to match, only unrelated entries
            reply = say(state.lang, "words_only") if state.lang else both("words_only")
            return Turn(Reply(reply), state, decision="no-words", lang=state.lang)
        text = self.nlu.truncate(text)  # as the NLU reads it, so operators' copy is quick to embed (the log keeps all)
        lang = detect_language(text)
        decision = self.nlu.answer(text, lang)
        top = decision.top
        details = dict(score=top.score if top else None, nlu_ms=decision.latency_ms)
        intent = next((i for i in self.nlu.intents if i.id == decision.intent), None)  # gone if just reloaded
        if intent:
            return self._on_intent(intent, lang, replace(state, lang=lang), details)
        state = replace(state, lang=lang, pending=[], next_choices=[], last_question=text)
        if state.handoff and decision.kind != ANSWER:
            # waiting for staff: what the bot is sure of it answers; the rest staff will, as it promised
            return Turn(Reply(say(lang, "waiting", **self.contact)), state, WAITING, lang=lang, **details)
        count = self.nlu.policies[lang].clarify_count
        offered = [c.faq_id for c in decision.candidates[:count]]
        if decision.kind == ANSWER:
            return self._answer(top.faq_id, lang, state, offered[1:], **details)
        details.update(suggestions=tuple(c.faq_id for c in decision.candidates[:3]), question=text)
        if decision.kind == CLARIFY:
            following = [c.faq_id for c in decision.candidates[count : 2 * count]]
            # nearer a question of another department's than any entry: say where to ask, keep the choices
            intro = "elsewhere_did_you_mean" if decision.outside >= top.score else "did_you_mean"
            reply = self._did_you_mean(offered, lang, intro)
            return Turn(reply, replace(state, pending=offered, next_choices=following), CLARIFIED, top.faq_id,
                        lang=lang, **details)
        return self._miss(state, lang, details, "elsewhere")

    def _on_intent(self, intent, lang: str, state: ConversationState, details: dict) -> Turn:
        """Asking for a person hands the conversation over at once; a greeting, thanks or goodbye gets its reply
        and leaves the conversation as it was (a "did you mean…" list stays open to a typed number)."""
        reply = Reply(intent.replies[lang].format(**self.contact))
        if intent.action == HANDOFF_INTENT:
            return Turn(reply, replace(state, handoff=True, misses=0), HANDOFF, lang=lang, **details)
        return Turn(reply, state, f"intent-{intent.id}", lang=lang, **details)

    def _miss(self, state: ConversationState, lang: str, details: dict, text: str = "fallback") -> Turn:
        """``text``: "elsewhere" for a question far from every entry (what this account answers, and where else
        to ask), "fallback" after choices that did not fit (try other words)."""
        misses = state.misses + 1
        if misses >= self.handoff_after_misses:
            state = replace(state, misses=misses, handoff=True)
            return Turn(Reply(say(lang, "handoff", **self.contact)), state, HANDOFF, lang=lang, **details)
        fallback = Reply(say(lang, text, **self.contact))
        return Turn(fallback, replace(state, misses=misses), FALLBACK, lang=lang, **details)

    def _on_postback(self, data: dict, state: ConversationState) -> Turn:
        lang = data.get("lang") or state.lang or "ja"
        action, faq_id = data.get("a"), data.get("faq", "")
        if action == "select" and self.nlu.faq.get(faq_id):
            others = [other for other in state.pending if other != faq_id]
            return self._answer(faq_id, lang, replace(state, lang=lang, pending=[]), others, score=None)
        if action == "ask" and data.get("text"):  # an example question tapped where buttons cannot send text
            return self._on_text(data["text"], state)
        if action == "feedback":
            return self._on_feedback(data.get("v") == "up", faq_id, lang, state)
        if action == "none":
            return self._none_fits(lang, state)
        return Turn(None, state, decision="ignored-postback")

    def _none_fits(self, lang: str, state: ConversationState) -> Turn:
        """"None of these": the entries ranked next get one more chance (the right entry is often 4th to 6th
        when it is not in the top 3); when those do not fit either, it is a miss."""
        choices = self._next_choices(state)
        if not choices:
            return self._miss(replace(state, pending=[], next_choices=[]), lang, {})
        state = replace(state, pending=choices, next_choices=[])
        return Turn(self._did_you_mean(choices, lang, "more_choices"), state, "clarified-more", lang=lang)

    def _on_feedback(self, up: bool, faq_id: str, lang: str, state: ConversationState) -> Turn:
        """Thanks; after a 👎 on the last answer, the entries ranked next are offered: a wrong answer is often
        the runner-up's question, so the resident is one tap from the right one rather than asking again."""
        decision = f"feedback-{'up' if up else 'down'}"
        if up:
            return Turn(Reply(say(lang, "thanks_up", **self.contact)), state, decision, faq_id, lang=lang)
        unhappy = {"question": state.last_question, "suggestions": (faq_id,)}
        choices = self._next_choices(state) if faq_id == state.last_answer else []
        if not choices:
            return Turn(Reply(say(lang, "thanks_down", **self.contact)), state, decision, faq_id, lang=lang, **unhappy)
        state = replace(state, pending=choices, next_choices=[])
        return Turn(self._did_you_mean(choices, lang, "instead"), state, decision, faq_id, lang=lang, **unhappy)

    def _next_choices(self, state: ConversationState) -> list[str]:
        """The entries held back for a second try that are still in the FAQ (it may have been reloaded)."""
        return [faq_id for faq_id in state.next_choices if self.nlu.faq.get(faq_id)]

    def _answer(self, faq_id: str, lang: str, state: ConversationState, runners_up=(), **details) -> Turn:
        entry = self.nlu.faq.get(faq_id)
        text = entry.text(lang).answer
        if entry.url:
            text += f"\n\n{say(lang, 'official_page')}: {entry.url}"
        feedback = [
            Choice(say(lang, key), data=encode_postback(a="feedback", faq=faq_id, v=value, lang=lang), text=say(lang, key))
            for key, value in (("helpful", "up"), ("not_helpful", "down"))
        ]
        state = replace(state, misses=0, last_answer=faq_id, next_choices=list(runners_up))
        return Turn(Reply(text, tuple(feedback)), state, ANSWERED, faq_id, lang=lang, **details)

    def _did_you_mean(self, faq_ids: list[str], lang: str, intro: str = "did_you_mean") -> Reply:
        questions = [self.nlu.faq.get(faq_id).text(lang).question for faq_id in faq_ids]
        lines = [say(lang, intro, **self.contact)] + [f"{n}. {q}" for n, q in enumerate(questions, 1)]
        choices = [
            Choice(f"{n}. {q}", data=encode_postback(a="select", faq=faq_id, lang=lang), text=q)
            for n, (faq_id, q) in enumerate(zip(faq_ids, questions), 1)
        ]
        none = say(lang, "none_of_these")
        choices.append(Choice(none, data=encode_postback(a="none", lang=lang), text=none))
        return Reply("\n".join(lines), tuple(choices), lead=lines[0])

    def _greeting(self) -> Reply:
        faq = self.nlu.faq
        entries = [faq.get(i) for i in self.examples if faq.get(i)] or list(faq.entries)
        entries = entries[:3]
        examples = "\n".join(f"・{e.text('ja').question} / {e.text('en').question}" for e in entries)
        choices = tuple(Choice(e.text("ja").question, text=e.text("ja").question) for e in entries)
        return Reply(GREETING.format(examples=examples), choices)


def _chosen_number(text: str, offered: list) -> str:
    """The FAQ id a typed number picks from the last "did you mean" list ("2", "２", " 2. "), or ""."""
    digits = unicodedata.normalize("NFKC", text).strip().rstrip(".")
    if digits.isdigit() and 1 <= int(digits) <= len(offered):
        return offered[int(digits) - 1]
    return ""
