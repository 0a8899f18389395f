"""Network and UTS namespaces, created and entered in-process.

Why in-process: forking `ip netns add` costs ~2 ms and a pyroute2 helper process per
namespace costs far more; a namespace is only an unshare() plus a bind mount, and a
socket opened while a thread sits in a namespace stays bound to it after the thread
leaves. setns() and unshare() act on the calling thread only, so everything here is
safe to use from a thread pool as long as each entry is paired with a restore.

Namespace files follow iproute2's convention (/run/netns/NAME) so `ip netns exec`,
`ip -n` and `nsenter --net=` all work on them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading
from collections.abc import Iterator
from pathlib import Path

NETNS_DIR = Path("/run/netns")

CLONE_NEWUTS = 0x04000000
CLONE_NEWNET = 0x40000000
_MS_BIND = 4096
_MS_REC = 16384
_MS_SHARED = 1 << 20
_MNT_DETACH = 2

_libc = ctypes.CDLL(None, use_errno=True)
_setup_lock = threading.Lock()
_netns_dir_ready = False


class NamespaceError(OSError):
    """A namespace could not be created, entered or removed."""


def _check(result: int, what: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise NamespaceError(err, f"{what}: {os.strerror(err)}")


def _mount(source: str, target: str, flags: int) -> None:
    _check(_libc.mount(source.encode(), target.encode(), None, flags, None), f"mount {target}")


def netns_path(name: str) -> Path:
    return NETNS_DIR / name


def _ensure_netns_dir() -> None:
    """Make /run/netns a shared mount point, as `ip netns add` does.

    Shared propagation lets namespace bind mounts made later appear in mount namespaces
    created before them (e.g. one from `ip netns exec`).
    """
    global _netns_dir_ready
    with _setup_lock:
        if _netns_dir_ready:
            return
        NETNS_DIR.mkdir(parents=True, exist_ok=True)
        # os.path.ismount() is no help: a bind mount of the same filesystem has the same
        # st_dev as its parent, so it would bind /run/netns onto itself again and again.
        if not _is_mount_point(NETNS_DIR):
            _mount(str(NETNS_DIR), str(NETNS_DIR), _MS_BIND | _MS_REC)
        _mount("none", str(NETNS_DIR), _MS_SHARED | _MS_REC)
        _netns_dir_ready = True


def _is_mount_point(path: Path) -> bool:
    with open("/proc/self/mountinfo") as mountinfo:
        return any(line.split()[4] == str(path) for line in mountinfo)


def _bind_current(nstype: str, target: Path) -> None:
    target.touch(exist_ok=False)
    try:
        _mount(f"/proc/thread-self/ns/{nstype}", str(target), _MS_BIND)
    except BaseException:
        target.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def _returning(nstypes: int) -> Iterator[None]:
    """Remember the calling thread's namespaces and go back to them afterwards.

    Lets a pool thread unshare() in place instead of paying for a fresh thread per pod.
    """
    kinds = [(CLONE_NEWNET, "net"), (CLONE_NEWUTS, "uts")]
    saved = [(flag, os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY))
             for flag, kind in kinds if nstypes & flag]
    try:
        yield
    finally:
        try:
            for flag, fd in saved:
                # Failing to return would leave a pool thread in a pod's namespace: fatal.
                _check(_libc.setns(fd, flag), "setns back")
        finally:
            for _flag, fd in saved:
                os.close(fd)


def create_netns(name: str, uts_path: Path | None = None, hostname: str | None = None) -> Path:
    """Create /run/netns/NAME (and optionally a UTS namespace file with a hostname).

    Raises NamespaceError (EEXIST) if the namespace already exists.
    """
    _ensure_netns_dir()
    path = netns_path(name)
    if path.exists():
        raise NamespaceError(17, f"network namespace {name} already exists")

    flags = CLONE_NEWNET | (CLONE_NEWUTS if uts_path is not None else 0)
    with _returning(flags):
        _check(_libc.unshare(flags), "unshare")
        _bind_current("net", path)
        if uts_path is not None:
            if hostname:
                raw = hostname.encode()[:64]
                _check(_libc.sethostname(raw, len(raw)), "sethostname")
            try:
                _bind_current("uts", uts_path)
            except BaseException:
                _unmount_file(path)
                raise
    return path


def _unmount_file(path: Path) -> None:
    _libc.umount2(str(path).encode(), _MNT_DETACH)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def delete_ns_file(path: Path) -> None:
    """Detach a namespace bind mount and remove its file; missing is fine."""
    _unmount_file(path)


def delete_netns(name: str) -> None:
    delete_ns_file(netns_path(name))


def list_netns(prefix: str = "") -> list[str]:
    if not NETNS_DIR.is_dir():
        return []
    return sorted(p.name for p in NETNS_DIR.iterdir() if p.name.startswith(prefix))


@contextlib.contextmanager
def entered(path: Path | str, nstype: int = CLONE_NEWNET) -> Iterator[None]:
    """Move the calling thread into a namespace for the duration of the block."""
    kind = "net" if nstype == CLONE_NEWNET else "uts"
    original = os.open(f"/proc/thread-self/ns/{kind}", os.O_RDONLY)
    try:
        target = os.open(path, os.O_RDONLY)
        try:
            _check(_libc.setns(target, nstype), f"setns {path}")
        finally:
            os.close(target)
        try:
            yield
        finally:
            # Failing to return would leave a pool thread in a pod's namespace: fatal.
            _check(_libc.setns(original, nstype), "setns back")
    finally:
        os.close(original)


def ns_inode(path: Path | str) -> int:
    return os.stat(path).st_ino


def pids_in_netns(path: Path | str) -> list[int]:
    """PIDs of processes whose network namespace is the one at `path` (like `ip netns pids`)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ns = os.stat(f"/proc/{entry.name}/ns/net")
        except OSError:
            continue
        if ns.st_ino == st.st_ino and ns.st_dev == st.st_dev:
            found.append(int(entry.name))
    return sorted(found)
