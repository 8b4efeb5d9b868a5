"""The transform: a star-schema warehouse kept current from the merge's events."""
