"""CNI for the lab: a CNI 1.1 runtime and kubewire's plugin executables (see README.md).

protocol (pure types and rules), invoke (exec a plugin), runtime (libcni behaviour),
shim + server (plugin executables backed by a warm in-process server), plugins.
"""
