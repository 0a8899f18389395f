"""ConfigMaps: keys that can become file names, string ``data``, base64 ``binaryData``."""

from __future__ import annotations

import base64
import binascii

from kubewire.api.errors import show_value
from kubewire.api.names import config_map_key_problems
from kubewire.api.objects import child_path
from kubewire.api.validation.common import Checker


def check_config_map(c: Checker) -> None:
    data = c.mapping(c.obj.get("data"), "data") or {}
    for key, value in data.items():
        path = child_path("data", str(key))
        c.names(str(key), path, config_map_key_problems, "key")
        if not isinstance(value, str):
            c.error(path, f"ConfigMap values must be strings, got {show_value(value)}; quote it")
    binary = c.mapping(c.obj.get("binaryData"), "binaryData") or {}
    for key, value in binary.items():
        path = child_path("binaryData", str(key))
        c.names(str(key), path, config_map_key_problems, "key")
        if key in data:
            c.error(path, f'key "{key}" is also in data; each key may appear only once')
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            c.error(path, "binaryData values must be base64-encoded strings")
    c.boolean(c.obj.get("immutable"), "immutable")


def check_secret(c: Checker) -> None:
    """Secrets: ``data`` values base64, ``stringData`` plain strings (the API server merges
    them into ``data``), keys as ConfigMap keys. kubewire keeps Secrets for what reads
    them (BGP passwords); it does not mount them into pods."""
    data = c.mapping(c.obj.get("data"), "data") or {}
    for key, value in data.items():
        path = child_path("data", str(key))
        c.names(str(key), path, config_map_key_problems, "key")
        try:
            base64.b64decode(value, validate=True)
        except (binascii.Error, TypeError, ValueError):
            c.error(path, "Secret data values must be base64-encoded strings (or use stringData)")
    plain = c.mapping(c.obj.get("stringData"), "stringData") or {}
    for key, value in plain.items():
        path = child_path("stringData", str(key))
        c.names(str(key), path, config_map_key_problems, "key")
        if not isinstance(value, str):
            c.error(path, f"stringData values must be strings, got {show_value(value)}; quote it")
    if c.obj.get("type") is not None:
        c.string(c.obj.get("type"), "type")
    c.boolean(c.obj.get("immutable"), "immutable")
