"""The `distil` command line: one module per subcommand, assembled in `main`."""
