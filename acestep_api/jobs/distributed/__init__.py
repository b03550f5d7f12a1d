"""The distributed job backend: job state and queue in one PostgreSQL database (procrastinate),
shared by stateless API replicas and GPU workers (docs/deploy.md)."""
