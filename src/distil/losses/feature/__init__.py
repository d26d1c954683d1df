"""Feature-based knowledge: losses on intermediate layers (hints, attention, flows, ...)."""
