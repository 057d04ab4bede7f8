"""The real-time layer: the Socket.IO server, its client manager and the ConnectionManager."""

from .connections import ClientConnection, ConnectionManager
from .notifier import Notifier

__all__ = ["ClientConnection", "ConnectionManager", "Notifier"]
