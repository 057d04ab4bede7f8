"""Inbound adapters: aiohttp route tables and the Socket.IO namespace."""
