"""Email: rendering, transports (SMTP or an outbox folder), the queue worker and digests."""
