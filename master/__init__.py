"""Master side of portside: configuration, supervision and discovery."""
