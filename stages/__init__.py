"""Thin click commands (the `gsae` console script) that parse params and call the library."""
