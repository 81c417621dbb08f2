"""Dockyard's host side: machines (VMs that run the engine), the CLI and the tray app.

The host never runs containers itself: it boots a machine, forwards the
engine's API socket to the host and lets the ``docker`` CLI talk to it::

    dockyard machine create && dockyard machine start
    eval "$(dockyard machine env)"; docker run --rm busybox echo hi
"""
