"""A real-time notification server: aiohttp + python-socketio + SQLAlchemy."""
