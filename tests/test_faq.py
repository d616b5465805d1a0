"""FAQ files: the shipped FAQ is complete, broken files are named precisely, and never served."""
import shutil
import textwrap

import pytest

from nlu import ANSWER, CLARIFY, FaqError, Nlu, load_faq, policies_from
from config.settings import PROJECT_ROOT, Settings
from tests.conftest import same_policies

GOOD = """\
entries:
  - id: first
    category: test
    url: https://city.example/first
    ja: {question: 一つ目の質問ですか, alternates: [一つ目その二, 一つ目その三], answer: 一つ目の答えです。}
    en: {question: Is this the first question, alternates: [first again, the first one], answer: The first answer.}
  - id: second
    category: test
    ja: {question: 二つ目の質問ですか, alternates: [二つ目その二, 二つ目その三], answer: 二つ目の答えです。}
    en: {question: Is this the second question, alternates: [second again, the second one], answer: The second answer.}
"""


def write(directory, text, name="test.yaml"):
    (directory / name).write_text(textwrap.dedent(text), encoding="utf-8")
    return directory


def test_the_shipped_faq_has_at_least_40_complete_bilingual_entries():
    faq = load_faq(PROJECT_ROOT / "faq_data")
    assert len(faq.entries) >= 40
    for entry in faq.entries:
        for lang in ("ja", "en"):
            assert len(entry.text(lang).alternates) >= 2, entry.id
    assert len({entry.category for entry in faq.entries}) >= 8


@pytest.mark.parametrize(
    "broken,entry,field",
    [
        (GOOD.replace("answer: 二つ目の答えです。", "answer: ''"), "second", "ja.answer"),
        (GOOD.replace("alternates: [first again, the first one]", "alternates: [only one]"), "first", "en.alternates"),
        (GOOD.replace("id: second", "id: first"), "first", "id"),
        (GOOD.replace("id: second", "id: Second Entry"), "Second Entry", "id"),
        (GOOD.replace("url: https://city.example/first", "url: city.example"), "first", "url"),
        (GOOD.replace("    category: test\n    ja: {question: 二つ目", "    categry: test\n    ja: {question: 二つ目"),
         "second", "categry"),
        (GOOD.replace("en: {question: Is this the second question", "en: {questio: Is this the second question"),
         "second", "en.questio"),
    ],
)
def test_a_broken_entry_is_reported_with_file_entry_and_field(tmp_path, broken, entry, field):
    write(tmp_path, broken)
    with pytest.raises(FaqError) as raised:
        load_faq(tmp_path)
    assert (raised.value.file, raised.value.entry, raised.value.field) == ("test.yaml", entry, field)
    assert str(raised.value).startswith(f"test.yaml: entry {entry}: field {field}:")


@pytest.mark.parametrize("text,match", [("entries: [oops", "not valid YAML"), ("- just a list", "'entries'"),
                                        ("", "'entries'")])
def test_an_unreadable_file_is_reported_by_name(tmp_path, text, match):
    write(tmp_path, text, "broken.yaml")
    with pytest.raises(FaqError, match=match) as raised:
        load_faq(tmp_path)
    assert raised.value.file == "broken.yaml"


def test_an_empty_directory_is_an_error(tmp_path):
    with pytest.raises(FaqError, match="no \\*.yaml FAQ files"):
        load_faq(tmp_path)


def test_a_broken_edit_keeps_the_last_good_faq_and_a_fix_is_picked_up(tmp_path, nlu):
    write(tmp_path, GOOD)
    small = Nlu(tmp_path, policies_from(Settings()), nlu.embedder)
    assert small.answer("Is this the second question").top.faq_id == "second"

    write(tmp_path, GOOD.replace("answer: The second answer.", "answer:"))
    assert small.reload_if_changed() is False
    assert "test.yaml: entry second: field en.answer" in small.status()["faq_error"]
    assert small.faq.get("second").text("en").answer == "The second answer."
    assert small.answer("Is this the second question").top.faq_id == "second"

    write(tmp_path, GOOD.replace("The second answer.", "The corrected second answer."))
    assert small.reload_if_changed() is True
    assert small.status()["faq_error"] == ""
    assert small.faq.get("second").text("en").answer == "The corrected second answer."


def test_an_unchanged_faq_is_not_reloaded(tmp_path, nlu):
    shutil.copy(PROJECT_ROOT / "faq_data" / "costs.yaml", tmp_path)
    small = Nlu(tmp_path, policies_from(Settings()), nlu.embedder)
    assert small.reload_if_changed() is False


def test_a_staged_start_answers_from_the_questions_then_adds_the_answer_heads(tmp_path, nlu):
    write(tmp_path, GOOD)
    # a margin of 0: the two questions differ by one word, and this is about staging, not thresholds
    small = Nlu(tmp_path, same_policies(0.9, 0.0, 0.8), nlu.embedder, answer_chars=20, staged=True)
    first = small.faq.get("first").text("en")
    assert small.retriever.indexes["en"].phrasings["first"] == list(first.phrasings)
    assert not small.index_complete and small.status()["faq_index"].startswith("questions only")
    early = small.answer("Is this the first question")
    assert early.top.faq_id == "first" and early.kind == CLARIFY  # no outright answers on a partial index

    small.complete_index()
    assert small.index_complete and small.status()["faq_index"] == "complete"
    assert small.answer("Is this the first question").kind == ANSWER
    assert small.retriever.indexes["en"].phrasings["first"][-1] == "Is this the first question The first answer."


def test_a_reload_during_a_staged_start_builds_the_full_index(tmp_path, nlu):
    write(tmp_path, GOOD)
    small = Nlu(tmp_path, policies_from(Settings()), nlu.embedder, answer_chars=20, staged=True)
    write(tmp_path, GOOD.replace("The second answer.", "The corrected second answer."))
    assert small.reload_if_changed() is True and small.index_complete
    assert small.retriever.indexes["en"].phrasings["second"][-1] == "Is this the second question The corrected second"


def test_check_faq_names_entries_that_give_the_same_answer_and_refuses_a_broken_file(tmp_path, capsys):
    from nlu import check_faq

    write(tmp_path, GOOD.replace("The second answer.", "The first  answer."))
    assert check_faq.main([str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "note: entries first, second give the same en answer" in out and " ja answer" not in out
    assert out.endswith(f"{tmp_path}: 2 entries OK, 0 intents OK\n")

    write(tmp_path, GOOD.replace("answer: The second answer.", "answer:"))
    assert check_faq.main([str(tmp_path)]) == 1
    assert "test.yaml: entry second: field en.answer" in capsys.readouterr().err
