"""``python -m nlu.check_faq [DIR]``: validate FAQ files before saving them into service."""
import sys

from nlu.faq import FaqError, load_faq


def main(argv=None) -> int:
    target = (argv or sys.argv[1:] or ["faq_data"])[0]
    try:
        faq = load_faq(target)
    except FaqError as error:
        print(f"FAQ error: {error}", file=sys.stderr)
        return 1
    print(f"{target}: {len(faq.entries)} entries OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
