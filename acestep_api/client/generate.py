"""Placeholder: `acestep-api generate`, filled in by its own change."""

DESCRIPTION = "Generate music with a running ACE-Step API server."


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    raise NotImplementedError
