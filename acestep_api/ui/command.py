"""Placeholder: `acestep-api ui` and `serve --ui`, filled in by their own change."""


def add_arguments(parser) -> None:
    pass


def run(args) -> int:
    raise NotImplementedError


def start_background(settings) -> None:
    raise NotImplementedError
