"""The Redis backend: inboxes shared by every worker and host (needs the `redis` extra)."""
