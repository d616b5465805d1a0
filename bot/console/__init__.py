"""The operator console (``bot.console.blueprint``)."""
