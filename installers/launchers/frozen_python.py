"""``python -m MODULE`` for a frozen program, whose sys.executable is itself.

The host side starts helpers the way a checkout runs them, e.g. the
machine's socket forwarder as ``[sys.executable, "-m",
"desktop.machine.forwarder", DIR]``. In the bundle ``sys.executable`` is
``dockyard`` or ``dockyard-desktop``, so both programs first look for that
shape and run the module from the bundle's archive instead of their own
main::

    dockyard -m desktop.machine.forwarder ~/.local/share/dockyard/machines/default
    dockyard -m vmimage build --output DIR      # a package runs its __main__

Only Dockyard's own packages can be run this way.
"""

from __future__ import annotations

import runpy
import sys

PACKAGES = ("desktop", "engine", "vmimage")


def run_module_if_asked() -> None:
    """Run ``-m MODULE ARGS...`` and exit; return when argv is not that shape."""
    if len(sys.argv) < 3 or sys.argv[1] != "-m":
        return
    module = sys.argv[2]
    if module.partition(".")[0] not in PACKAGES:
        print(
            f"{sys.argv[0]}: -m runs only Dockyard's modules, not {module}",
            file=sys.stderr,
        )
        sys.exit(2)
    # What `python -m` leaves in argv: the module's path first, then its args.
    sys.argv = [module, *sys.argv[3:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
    sys.exit(0)
