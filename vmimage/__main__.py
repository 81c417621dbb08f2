"""``python -m vmimage build [--output DIR] [--force]``; ``verify DIR``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from vmimage.builder import DEFAULT_CACHE, BuildError, build, verify


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vmimage")
    sub = parser.add_subparsers(dest="command", required=True)
    p_build = sub.add_parser("build", help="build the guest image (cached)")
    p_build.add_argument("--output", type=Path, default=DEFAULT_CACHE)
    p_build.add_argument("--force", action="store_true", help="ignore the cache")
    p_verify = sub.add_parser("verify", help="check files against the manifest")
    p_verify.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "build":
            manifest = build(args.output, force=args.force, progress=print)
            print(f"version {manifest.version}, kernel {manifest.kernel_version}")
        else:
            verify(args.dir)
            print(f"{args.dir}: all files match the manifest")
    except (BuildError, OSError) as err:
        print(f"vmimage: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
