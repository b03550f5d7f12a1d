"""A small client of the REST API, and the `acestep-api generate` command built on it."""
