"""``dockyard``: manage machines from a terminal.

    dockyard machine create [NAME] [--cpus N] [--memory MiB] [--disk GiB]
                            [--share PATH]... [--backend qemu|virtualbox|hyperv]
    dockyard machine start|stop|restart|status|rm [-f]|ssh|env|logs|inspect [NAME]
    dockyard machine ls

Errors print one sentence and exit 1; never a traceback for bad input.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys
from pathlib import Path

from desktop.machine import (
    BACKENDS,
    MachineError,
    MachineManager,
    MachineSpec,
    StageEvent,
)

log = logging.getLogger(__name__)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dockyard", description="Dockyard machines")
    parser.add_argument(
        "--home", type=Path, help="state folder (default: $DOCKYARD_HOME)"
    )
    parser.add_argument("--debug", action="store_true", help="log decisions to stderr")
    top = parser.add_subparsers(dest="group", required=True)
    machine = top.add_parser("machine", help="manage the VMs that run the engine")
    sub = machine.add_subparsers(dest="command", required=True)

    create = sub.add_parser("create", help="create a machine")
    create.add_argument("name", nargs="?", default="default")
    create.add_argument("--cpus", type=int, default=2)
    create.add_argument("--memory", type=int, default=2048, metavar="MiB")
    create.add_argument("--disk", type=int, default=20, metavar="GiB")
    create.add_argument(
        "--share",
        action="append",
        metavar="PATH",
        help="host folder to share (repeatable; default: your home)",
    )
    create.add_argument("--backend", choices=BACKENDS, default="qemu")

    for name, text in (
        ("start", "boot the machine and wait for its engine"),
        ("stop", "power the machine off"),
        ("restart", "stop, then start"),
        ("status", "show the machine's state"),
        ("ssh", "open a shell in the machine"),
        ("env", "print the DOCKER_HOST export for the machine"),
        ("logs", "print the machine's log and console"),
        ("inspect", "print the machine as JSON"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument("name", nargs="?", default="default")
        if name == "ssh":
            p.add_argument("cmd", nargs=argparse.REMAINDER, help="command to run")
    rm = sub.add_parser("rm", help="remove a machine and all its files")
    rm.add_argument("name", nargs="?", default="default")
    rm.add_argument(
        "-f", "--force", action="store_true", help="stop it first if running"
    )
    sub.add_parser("ls", help="list machines")
    return parser


def _print_event(event: StageEvent) -> None:
    if event.failed:
        print(f"[{event.stage:<11}] FAILED: {event.message}", flush=True)
    elif event.done:
        print(
            f"[{event.stage:<11}] {event.message} ({event.elapsed:.1f} s)", flush=True
        )


def _human_bytes(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024:
            return f"{size:.0f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


def run(args: argparse.Namespace) -> int:
    manager = MachineManager(args.home)
    cmd = args.command
    if cmd == "create":
        spec = MachineSpec(
            name=args.name,
            cpus=args.cpus,
            memory_mib=args.memory,
            disk_gib=args.disk,
            backend=args.backend,
        )
        if args.share:
            spec.shares = [str(Path(p).absolute()) for p in args.share]
        manager.create(spec)
        print(
            f"created machine {spec.name}: start it with `dockyard machine start"
            f"{'' if spec.name == 'default' else ' ' + spec.name}`"
        )
        return 0
    if cmd == "ls":
        rows = manager.list()
        print(
            f"{'NAME':<16}{'STATE':<10}{'BACKEND':<12}{'CPUS':<6}{'MEMORY':<10}{'DISK':<10}DOCKER_HOST"
        )
        for st in rows:
            print(
                f"{st.name:<16}{st.state.value:<10}{st.backend:<12}{st.cpus:<6}"
                f"{str(st.memory_mib) + ' MiB':<10}{str(st.disk_gib) + ' GiB':<10}{st.docker_host or '-'}"
            )
        return 0
    if cmd == "rm":
        manager.remove(args.name, force=args.force)
        print(f"removed machine {args.name}")
        return 0

    machine = manager.get(args.name)
    if cmd == "start":
        machine.start(progress=_print_event)
        print(f"\nmachine {machine.name} is running. Point docker at it with:")
        for key, value in machine.docker_env().items():
            print(f"  export {key}={shlex.quote(value)}")
        print(f"or: docker context use {machine.context_name}")
    elif cmd == "stop":
        machine.stop()
        print(f"machine {machine.name} stopped")
    elif cmd == "restart":
        machine.restart(progress=_print_event)
        print(f"machine {machine.name} is running: DOCKER_HOST={machine.docker_host}")
    elif cmd == "status":
        st = machine.status()
        print(f"{st.name}: {st.state.value}")
        print(f"  backend   {st.backend}, {st.cpus} CPUs, {st.memory_mib} MiB")
        print(
            f"  disk      {st.disk_gib} GiB ({_human_bytes(st.disk_used_bytes)} used on the host)"
        )
        if st.uptime_seconds is not None:
            print(f"  uptime    {st.uptime_seconds:.0f} s")
        if st.docker_host:
            print(f"  docker    {st.docker_host}")
        if st.error:
            print(f"  error     {st.error}")
        print(f"  log       {st.log_path}")
    elif cmd == "env":
        for key, value in machine.docker_env().items():
            print(f"export {key}={shlex.quote(value)}")
        print(
            f'# run: eval "$(dockyard machine env{"" if machine.name == "default" else " " + machine.name})"'
        )
    elif cmd == "logs":
        for path in (
            machine.dirs.log,
            machine.dirs.forwarder_log,
            machine.dirs.console,
        ):
            if path.exists():
                print(f"==> {path} <==")
                sys.stdout.write(path.read_text(errors="replace"))
    elif cmd == "inspect":
        print(json.dumps(machine.inspect(), indent=2, default=str))
    elif cmd == "ssh":
        argv = machine.ssh_command()
        extra = [a for a in args.cmd if a != "--"]
        sys.stdout.flush()
        os.execvp(argv[0], argv + extra)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.debug else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("paramiko").setLevel(
        logging.WARNING if args.debug else logging.CRITICAL
    )
    try:
        return run(args)
    except MachineError as err:
        print(f"dockyard: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("dockyard: interrupted", file=sys.stderr)
        return 130
    except OSError as err:
        print(f"dockyard: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
