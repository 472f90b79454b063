"""The chaos campaign: the whole gateway as real processes, under faults, kills and restarts.

`python -m tests.chaos.run [--full]` runs it and prints the figures; test_chaos.py
runs a shortened version inside `make test`.
"""
