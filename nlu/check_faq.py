"""``python -m nlu.check_faq [DIR]``: validate FAQ files, and the intents in DIR/intents, before saving them into
service."""
import sys
from pathlib import Path

from nlu.faq import LANGUAGES, Faq, FaqError, load_faq
from nlu.intents import load_intents
from nlu.retrieval import shared_answers


def same_answer_notes(faq: Faq) -> list[str]:
    """One line per group of entries that give the same answer in a language: the bot offers them as one choice
    (``decision.one_per_answer``), so an operator may rather make one entry's question an alternate of the other."""
    notes = []
    for lang in LANGUAGES:
        groups: dict = {}
        for faq_id, first in shared_answers([e.id for e in faq.entries],
                                            [e.text(lang).answer for e in faq.entries]).items():
            groups.setdefault(first, []).append(faq_id)
        notes += [f"note: entries {', '.join(ids)} give the same {lang} answer; residents see them as one choice"
                  for ids in groups.values()]
    return notes


def main(argv=None) -> int:
    target = (argv or sys.argv[1:] or ["faq_data"])[0]
    try:
        faq = load_faq(target)
        intents = load_intents(Path(target) / "intents")
    except FaqError as error:
        print(f"FAQ error: {error}", file=sys.stderr)
        return 1
    for note in same_answer_notes(faq):
        print(note)
    print(f"{target}: {len(faq.entries)} entries OK, {len(intents)} intents OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
