"""The bundle's ``dockyard`` program: the CLI, ``desktop.cli:main``."""

import sys

from frozen_python import run_module_if_asked

run_module_if_asked()

from desktop.cli import main  # noqa: E402 (after the -m check, which may exit)

if __name__ == "__main__":
    sys.exit(main())
