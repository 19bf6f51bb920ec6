"""`python -m simulators`: the four simulated agencies in one process, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import re
import sys

from simulators.server import AGENCIES, DEFAULT_PORTS, load_rules, serve_simulators

__all__ = ["main", "parse_ports", "parse_tax_codes"]


def parse_ports(text: str) -> dict[str, int]:
    """`inps=8701,inail=8702,...` -> {"inps": 8701, ...}; agencies left out keep their default."""
    ports = dict(DEFAULT_PORTS)
    for item in filter(None, (part.strip() for part in text.split(","))):
        agency, sep, port = item.partition("=")
        if not sep or agency not in AGENCIES or not port.isdigit() or int(port) > 65535:
            raise argparse.ArgumentTypeError(f"expected agency=port with agency in {AGENCIES}")
        ports[agency] = int(port)
    return ports


def parse_tax_codes(text: str) -> frozenset[str]:
    """`02468135799,RSSMRA80A01H501U` -> the set; each an 11-digit or 16-character tax code."""
    codes = frozenset(filter(None, (part.strip().upper() for part in text.split(","))))
    bad = [c for c in codes if not re.fullmatch(r"[0-9]{11}|[A-Z0-9]{16}", c)]
    if bad:
        raise argparse.ArgumentTypeError(f"not tax codes: {', '.join(sorted(bad))}")
    return codes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback)")
    parser.add_argument(
        "--ports", type=parse_ports, default=dict(DEFAULT_PORTS),
        help="agency=port list, e.g. inps=8701,inail=8702,cciaa=8703,runts=8704",
    )
    parser.add_argument("--rules", help="JSON file of permanent fault/reject rules per agency")
    parser.add_argument(
        "--durc-debtors", type=parse_tax_codes, default=None,
        help="comma-separated tax codes INPS knows as debtors: their DURC is IRREGOLARE "
             "(default: the list in simulators/services.py)",
    )
    args = parser.parse_args(argv)
    try:
        rules = load_rules(args.rules) if args.rules else None
    except (OSError, ValueError) as exc:
        parser.error(f"--rules: {exc}")
    serve_simulators(args.ports, args.host, rules=rules, durc_debtors=args.durc_debtors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
