"""Worker side of portside: everything on the request path."""
