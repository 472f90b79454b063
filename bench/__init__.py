"""wxgate's benchmarks: `make bench` (`python -m bench`), never part of `make test`.

One module per case (ceiling, peer, delivery, end_to_end, tokens, memory), the
processes they start (`procs`), the load generators' HTTP client (`http`), the
message every case sends (`payload`) and the table, JSON and chart (`results`).
"""
