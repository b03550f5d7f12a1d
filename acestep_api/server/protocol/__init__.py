"""Pydantic models of request and response bodies, kept apart from the routes that serve them."""
