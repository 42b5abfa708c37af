"""Content-addressed vector cache and the build that fills it."""
