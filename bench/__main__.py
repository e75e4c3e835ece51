"""`python -m bench [--size tiny|small|default|full] [--backend sqlite|postgresql|both]
[--scenario storm,reads,usage,provision,webhooks] [--auth on|off]`: run the scenarios, print one
table, write it as JSON."""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from bench.scenarios import (
    SIZES,
    Backend,
    Row,
    credit_events,
    provisioning,
    reads_and_debits,
    renewal_storm,
    webhook_delivery,
)
from credit_common.config import cpu_list, on_off, positive_int

SCENARIOS = ("storm", "reads", "usage", "provision", "events", "webhooks")


def machine() -> dict:
    cpu = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            mem_kb = int(line.split()[1])
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gb": round(mem_kb / 1024 / 1024, 1),
        "python": platform.python_version(),
        "loadavg_at_start": os.getloadavg()[0],
    }


def format_value(value: float | None, unit: str = "") -> str:
    if value is None:
        return "-"
    if unit == "ms" or abs(value) < 100:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def table(rows: list[Row]) -> str:
    header = ["scenario", "backend", "figure", "value", "unit", "baseline", "ratio", "bar", "verdict"]
    lines = [
        [
            r.scenario,
            r.backend,
            r.figure,
            format_value(r.value, r.unit),
            r.unit,
            format_value(r.baseline, r.unit),
            "-" if r.ratio is None else f"{r.ratio:.3f}",
            r.bar,
            r.verdict,
        ]
        for r in rows
    ]
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(header)]
    out = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    out += ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)) + " |" for line in lines]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--size", choices=list(SIZES), default="default")
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument(
        "--scenario", default="all", help=f"comma-separated, among {', '.join(SCENARIOS)} (default: all)"
    )
    parser.add_argument("--output", default="bench/results.json", help="where the JSON goes")
    parser.add_argument(
        "--profile", metavar="DIR", help="sample every server process with py-spy; collapsed stacks go to DIR"
    )
    parser.add_argument("--keep", action="store_true", help="keep the run directory (databases, server logs)")
    available = sorted(os.sched_getaffinity(0))
    parser.add_argument(
        "--grant-processes",
        type=positive_int,
        default=len(available),
        help=f"server processes of the grant service (its --processes; default: one per CPU, {len(available)})",
    )
    parser.add_argument(
        "--server-cpus",
        type=lambda text: None if text == "none" else cpu_list(text),
        default=frozenset(available),
        metavar="CPUS",
        help="the services' --cpus (default: every CPU, so each grant server process runs on a CPU of its "
        "own; 'none': not pinned); the load generators and PostgreSQL stay wherever the OS puts them",
    )
    parser.add_argument(
        "--auth",
        type=on_off,
        default=True,
        metavar="on|off",
        help="run the services with API keys checked (default on; every call carries a key) or with --auth "
        "off, for the comparison of docs/security.md",
    )
    args = parser.parse_args(argv)
    scenarios = SCENARIOS if args.scenario == "all" else tuple(s.strip() for s in args.scenario.split(","))
    unknown = set(scenarios) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    size = SIZES[args.size]
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        os.environ["BENCH_PROFILE_DIR"] = str(Path(args.profile).resolve())
    # The services read GRANT_* / CATALOG_* from the environment (start_service passes os.environ).
    os.environ["GRANT_PROCESSES"] = str(args.grant_processes)
    os.environ["GRANT_AUTH"] = os.environ["CATALOG_AUTH"] = "on" if args.auth else "off"
    if args.server_cpus is not None:
        cpus = ",".join(str(cpu) for cpu in sorted(args.server_cpus))
        os.environ["GRANT_CPUS"] = os.environ["CATALOG_CPUS"] = cpus
    else:
        os.environ.pop("GRANT_CPUS", None)
        os.environ.pop("CATALOG_CPUS", None)
    backends = ["sqlite", "postgresql"] if args.backend == "both" else [args.backend]
    run_dir = Path(tempfile.mkdtemp(prefix="credit-grants-bench-"))

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    rows: list[Row] = []
    started = time.monotonic()
    info = {
        "size": args.size,
        "parameters": size.__dict__,
        "machine": machine(),
        "started": datetime.now(UTC).isoformat(),
        "grant_processes": args.grant_processes,
        "server_cpus": sorted(args.server_cpus) if args.server_cpus is not None else None,
        "auth": args.auth,
    }
    pinned = f", pinned to CPUs {info['server_cpus']}" if info["server_cpus"] is not None else ", not pinned"
    log(
        f"bench size={args.size} {size} on {info['machine']}; grant service: {args.grant_processes} "
        f"server process(es){pinned}; auth {'on' if args.auth else 'off'}; run directory {run_dir}"
    )
    try:
        for name in backends:
            backend = Backend(name, run_dir)
            try:
                if "storm" in scenarios:
                    log(f"[{name}] renewal storm")
                    rows += renewal_storm(backend, size, log)
                if "reads" in scenarios or "usage" in scenarios:
                    log(f"[{name}] balance reads / usage debits")
                    rows += reads_and_debits(
                        backend, size, log, reads="reads" in scenarios, debits="usage" in scenarios
                    )
                if "provision" in scenarios:
                    log(f"[{name}] provisioning end to end")
                    rows += provisioning(backend, size, log)
                if "events" in scenarios:
                    log(f"[{name}] credit events")
                    rows += credit_events(backend, size, log)
                if "webhooks" in scenarios:
                    log(f"[{name}] webhook delivery")
                    rows += webhook_delivery(backend, size, log)
            finally:
                backend.close()
    finally:
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)
    info["seconds"] = round(time.monotonic() - started, 1)
    info["rows"] = [r.as_dict() for r in rows]
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(info, indent=2) + "\n")
    print(table(rows))
    log(f"{len(rows)} figures in {info['seconds']}s; JSON in {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
