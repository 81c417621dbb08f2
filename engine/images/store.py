"""The image store: blobs, unpacked layers, image configs and references."""

from __future__ import annotations

from engine.component import Component


class ImageStore(Component):
    pass
