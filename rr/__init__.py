"""`rr`, the command line of Reveal & Release (`rr.cli:app`)."""
