"""Outbound notifications (the confirmation robot): templates, rendering for speech."""
