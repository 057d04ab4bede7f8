"""Attack tests: hostile input and resource exhaustion, each refused with a clear error."""
