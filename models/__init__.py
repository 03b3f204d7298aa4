"""Tables, queries and migrations of the client store and the call journal (SQLAlchemy 2.0)."""
