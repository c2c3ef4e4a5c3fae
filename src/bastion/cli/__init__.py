"""The `bastion` command line (Typer): a thin shell over the library layers."""
