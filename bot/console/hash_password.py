"""``python -m bot.console.hash_password NAME``: print a CONSOLE_OPERATORS entry for an operator."""
import getpass
import sys

from werkzeug.security import generate_password_hash


def main(argv=None) -> int:
    args = argv if argv is not None else sys.argv[1:]
    if len(args) != 1 or ":" in args[0] or "," in args[0]:
        print("usage: python -m bot.console.hash_password NAME   (no ':' or ',' in the name)", file=sys.stderr)
        return 2
    password = getpass.getpass(f"Password for {args[0]}: ")
    if len(password) < 12 or password != getpass.getpass("Again: "):
        print("Passwords must match and be at least 12 characters.", file=sys.stderr)
        return 1
    print(f"{args[0]}:{generate_password_hash(password)}")
    print("Add it to CONSOLE_OPERATORS (comma-separated entries).", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
