"""Rating: usage aggregates × price components → priced lines."""
