"""The Dockyard tray app: a PySide6 front end over the machine layer.

The app is split so that only the widgets know about Qt:

- ``backend.py`` and ``engine_client.py`` are plain, blocking Python: the
  machine (or a bare engine socket on a Linux host) and the Engine API.
- ``workers.py`` runs those blocking calls on worker threads and turns their
  results into Qt signals; nothing blocking ever runs on the GUI thread.
- ``controller.py`` holds the machine's state and is shared by the tray,
  the dashboard and the settings dialog.

``dockyard-desktop [--show-dashboard]`` (``app.main``) is the entry point.
"""
