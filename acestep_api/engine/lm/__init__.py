"""The 5 Hz language model: the planner that writes metadata, captions, lyrics and audio codes."""
