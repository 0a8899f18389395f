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
