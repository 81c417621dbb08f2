"""``python -m installers build [--platform P] [--output DIR] [--work DIR] [--plan]``."""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from installers.build import build, plan
from installers.errors import InstallerError
from installers.project import PLATFORMS, REPO, Project, host_platform


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m installers", description="Build Dockyard's installers."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="wheel, bundle and the platform's package")
    p_build.add_argument("--platform", choices=PLATFORMS, default=None)
    p_build.add_argument("--output", type=Path, default=REPO / "dist")
    p_build.add_argument(
        "--work", type=Path, default=REPO / "build" / "installers",
        help="scratch folder: the wheel, PyInstaller's files, the bundle",
    )  # fmt: skip
    p_build.add_argument(
        "--plan",
        action="store_true",
        help="only write the generated scripts and print the commands (any system)",
    )
    p_build.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="installers: %(message)s",
    )
    try:
        project = Project.load()
        system = args.platform or host_platform()
        if args.plan:
            for step in plan(project, system, args.output, args.work):
                print(step.command_line())
            return 0
        started = time.monotonic()
        artifacts = build(project, system, args.output, args.work)
    except InstallerError as err:
        print(f"installers: {err}", file=sys.stderr)
        return 1

    for path in artifacts:
        print(path)
    logging.getLogger("installers").info("done in %.0f s", time.monotonic() - started)
    return 0


if __name__ == "__main__":
    sys.exit(main())
