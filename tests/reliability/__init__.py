"""Fault tests: databases, buses and processes that fail, and what the server does then."""
