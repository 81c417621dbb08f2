"""Dockyard's guest image: a small Debian 12 that boots to SSH and the engine.

    python -m vmimage build --output /var/cache/dockyard/vmimage

See ``vmimage.build`` for the files and how the cache is keyed.
"""

from vmimage.builder import (
    DEFAULT_CACHE,
    GUEST_ROOT_HOME,
    IMAGE_VERSION,
    BuildError,
    Manifest,
    build,
    cached,
    inputs_hash,
    verify,
)

__all__ = [
    "DEFAULT_CACHE",
    "GUEST_ROOT_HOME",
    "IMAGE_VERSION",
    "BuildError",
    "Manifest",
    "build",
    "cached",
    "inputs_hash",
    "verify",
]
