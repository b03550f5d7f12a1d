"""Signed webhooks: a job's callback URL, checked when it is given and again when it is called,
a stored delivery per job, and the loop that sends due deliveries (docs/operations.md#webhooks)."""
