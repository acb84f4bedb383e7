"""Master side of portside: configuration, supervision and discovery."""

#: The release, read by pyproject.toml too. A constant rather than importlib.metadata,
#: whose imports (email, zipfile, csv: about 1 MB) every forked worker would carry.
VERSION = "0.1.0"
