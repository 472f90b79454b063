"""A faithful local WeChat for development, tests, demos and benchmarks.

`server.SandboxServer` serves it (in a test's event loop, or as a process via
`server.run` / `wxgate sandbox`); `control.SandboxControl` inspects and steers it.
"""
