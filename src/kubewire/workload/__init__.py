"""Containers in kubewire pods: the built-in test server and real commands.

Kept free of imports so `python -m kubewire.workload.server` loads only what it uses.
See README.md.
"""
