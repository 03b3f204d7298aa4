"""The web console: operator controls, rules editor, client card (docs/web.md)."""
