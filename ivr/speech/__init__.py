"""Speech helpers: turning written Russian into text a TTS engine reads correctly."""
