"""One module per CLI subcommand: each turns parsed arguments into calls of the library."""
