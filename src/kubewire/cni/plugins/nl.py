"""Small helpers the plugins share around kernel.rtnl: namespaces, errors, MACs."""

from __future__ import annotations

import os

from kubewire.cni.protocol import CniError, ErrorCode
from kubewire.kernel.rtnl import NetlinkError


def open_netns_fd(netns: str) -> int:
    """An fd for the container namespace; a missing namespace is CNI error 3."""
    try:
        return os.open(netns, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise CniError(
            ErrorCode.UNKNOWN_CONTAINER, f"network namespace {netns} does not exist"
        ) from None


_INIT_NETNS_REFERENCES = ("/proc/1/ns/net", "/proc/2/ns/net")


def refuse_init_netns(netns: str, role: str) -> None:
    """Refuse to program the machine's own network namespace.

    kubewire builds its lab strictly inside namespaces it created; a runtime that
    forgot to enter the node namespace must fail loudly, not rewire the real host.
    The machine's namespace is PID 1's, or kthreadd's (PID 2, always in the initial
    namespace) where a sandbox hides PID 1's namespace even from root.
    """
    try:
        target = os.stat(netns)
    except OSError:
        return  # missing namespaces are reported by the caller, in context
    for reference in _INIT_NETNS_REFERENCES:
        try:
            init = os.stat(reference)
        except OSError:
            continue
        if (target.st_dev, target.st_ino) != (init.st_dev, init.st_ino):
            continue
        raise CniError(
            ErrorCode.INVALID_ENVIRONMENT,
            f"refusing to use the machine's own network namespace as the {role} namespace",
            "invoke kubewire plugins inside a lab node's namespace (CniRuntime host_netns)",
        )


def netns_exists(netns: str) -> bool:
    return bool(netns) and os.path.exists(netns)


def kernel_error(what: str, exc: BaseException) -> CniError:
    """A CniError for an unexpected kernel (or namespace) failure during `what`."""
    known = isinstance(exc, NetlinkError | OSError)
    reason = str(exc) if known else f"{type(exc).__name__}: {exc}"
    return CniError(ErrorCode.KERNEL, f"{what}: {reason}")


def random_mac() -> str:
    """A random unicast, locally administered MAC (what the kernel would pick)."""
    raw = bytearray(os.urandom(6))
    raw[0] = (raw[0] & 0xFE) | 0x02
    return ":".join(f"{b:02x}" for b in raw)
