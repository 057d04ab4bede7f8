"""Events from other services: the CloudEvent model and the event-to-notification mappings."""
