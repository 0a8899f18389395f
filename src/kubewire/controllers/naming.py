"""How Kubernetes controllers name what they create, reproduced deterministically.

Kubernetes names Deployment ReplicaSets ``{deployment}-{pod-template-hash}`` and the pods of
ReplicaSets and DaemonSets ``{owner}-{5 random characters}``. We keep the shapes and the
alphabet, so names look familiar, but derive the random part from a hash of stable inputs, so
that the same manifests always give the same cluster.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

__all__ = [
    "GENERATED_SUFFIX_LENGTH",
    "MAX_GENERATED_NAME_BASE",
    "SAFE_ALPHABET",
    "fnv1a_32",
    "generated_name",
    "generated_suffix",
    "pod_template_hash",
    "safe_encode",
]

# k8s.io/apimachinery/pkg/util/rand: no vowels and no 0/1/3, so generated names spell no words.
SAFE_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
GENERATED_SUFFIX_LENGTH = 5
# A generated name is at most 63 characters: the base (owner name plus "-") is cut to 58.
MAX_GENERATED_NAME_BASE = 63 - GENERATED_SUFFIX_LENGTH

_FNV32_OFFSET = 0x811C9DC5
_FNV32_PRIME = 0x01000193


def fnv1a_32(data: bytes) -> int:
    value = _FNV32_OFFSET
    for byte in data:
        value = ((value ^ byte) * _FNV32_PRIME) & 0xFFFFFFFF
    return value


def safe_encode(text: str) -> str:
    """Kubernetes' SafeEncodeString: each character mapped into the safe alphabet."""
    return "".join(SAFE_ALPHABET[ord(char) % len(SAFE_ALPHABET)] for char in text)


def pod_template_hash(template: Mapping[str, Any], collision_count: int | None = None) -> str:
    """The ``pod-template-hash`` of a Deployment's pod template (controller.ComputeHash).

    Same recipe as Kubernetes: FNV-1a 32 over a serialisation of the template, plus the
    collision count as 8 little-endian bytes, and the decimal digits of the sum put through
    ``safe_encode``. The serialisation is canonical sorted JSON rather than Go's deep-hash
    printer over the defaulted template, so the bytes differ and our hashes will not equal
    the ones a real cluster shows for the same manifest; they are stable and change exactly
    when the template changes, which is what the name is for.
    """
    data = json.dumps(template, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    payload = data.encode()
    if collision_count is not None:
        payload += struct.pack("<I", collision_count & 0xFFFFFFFF) + bytes(4)
    return safe_encode(str(fnv1a_32(payload)))


def generated_suffix(*parts: str, attempt: int = 0) -> str:
    """A 5-character suffix in the safe alphabet, determined by ``parts`` and ``attempt``.

    Stands in for ``rand.String(5)``; callers bump ``attempt`` when a name is already taken.
    """
    seed = "\x00".join((*parts, str(attempt))).encode()
    number = int.from_bytes(hashlib.sha256(seed).digest()[:8], "big")
    characters = []
    for _ in range(GENERATED_SUFFIX_LENGTH):
        number, index = divmod(number, len(SAFE_ALPHABET))
        characters.append(SAFE_ALPHABET[index])
    return "".join(characters)


def generated_name(owner_name: str, suffix: str) -> str:
    """``{owner}-{suffix}`` with the base cut as the API server's generateName cuts it."""
    return f"{owner_name}-"[:MAX_GENERATED_NAME_BASE] + suffix
