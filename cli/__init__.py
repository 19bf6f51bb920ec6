"""What the command line does beyond parsing arguments: the demo, a portal client, tables."""
