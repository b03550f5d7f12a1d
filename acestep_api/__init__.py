"""acestep-api: a self-hostable server for the ACE-Step 1.5 music models."""

__version__ = "0.1.0"
