"""Subcommands of the facecap CLI, one module each."""
