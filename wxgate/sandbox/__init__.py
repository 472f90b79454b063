"""A faithful local WeChat for development, tests, demos and benchmarks.

`server.SandboxServer` serves it (in a test's event loop, or as a process via
`server.run` / `wxgate sandbox`); `control.SandboxControl` inspects and steers it.
Template messages are `wechat.py`'s, subscribe messages `subscribe.py`'s; the
control endpoints are listed in `routes.py`, the test values in `wechat.py` and
`subscribe.py`, the default accounts in `config.py`.
"""
