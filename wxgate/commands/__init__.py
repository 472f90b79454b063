"""Command groups of the `wxgate` command line beyond the core ones in cli.py, one
module each (templates, suppressions, grants, keys, audit, webhooks, ...)."""
