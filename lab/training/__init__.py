"""Offline training of the entailment cross-encoder (never imported by the bot at run time)."""
