#!/usr/bin/env python3
"""CPU the agency adapters spend per delivery, client side, per agency, against the simulators.

The four agency simulators run in their own process on loopback; this process builds the
adapters as `bootstrap` does for the default configuration (contracts, signers, reply-to) and
delivers messages planned from the sample filings (`schemas/filing/v1/examples`) the way the
intake plans them, through `deliver_with_retries` as the worker calls it, with modest
concurrency. Only this process's CPU is counted (`time.process_time`), never wall time: the
machine is shared. Each agency runs on its own, so its total is its own; the breakdown times
the adapter's synchronous steps with the thread's CPU clock:

- build: the message built by the contract and validated against the agency's schema,
- sign: the WS-Security signature (SOAP) or the ModI headers (REST),
- receipt: the reply checked (faults, contract) and the receipt read,
- rest: everything else, mostly HTTP (httpx), the event loop and the retry wrapper.

Logging runs at `warning` (the worker's `delivery_sent` at info is not counted). The HTTP
client is the worker's (`wiring.agencies.agency_http_client`) with the configured `[http] pool`
(aiohttp: `read_reply`'s direct path), unless `--pool` names another; `--pool httpx-plain`
builds a bare httpx client, as this benchmark did before it followed the configuration, so that
older figures stay comparable. On a shared machine CPU per delivery still moves with the load
(±20 % between runs): compare two trees with alternating runs, not one run each, or count
instructions: `--instructions` runs this benchmark again under valgrind's callgrind (the
simulators natively) and prints the instructions each delivery took, a figure that repeats
(`bench/callgrind.py`); the run is ~50 times slower, so use fewer deliveries.

    .venv/bin/python bench/adapter_cpu.py --deliveries 400 --concurrency 8 --rounds 3
    .venv/bin/python bench/adapter_cpu.py --agencies inps --deliveries 1000   # one agency
    .venv/bin/python bench/adapter_cpu.py --pool httpx-plain                  # the former client
    .venv/bin/python bench/adapter_cpu.py --instructions --deliveries 100 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bootstrap  # noqa: E402
from adapters.base import deliver_with_retries  # noqa: E402
from config.logging import configure_logging  # noqa: E402
from config.settings import load_settings  # noqa: E402
from domain.messages import OutgoingMessage  # noqa: E402
from routing.plan import FilingFacts, fill_handoffs, plan_deliveries  # noqa: E402
from routing.routes import load_route_table  # noqa: E402
from schemas.filing import FilingValidator  # noqa: E402
from schemas.samples import load_sample_filings  # noqa: E402
from simulators.launcher import start_simulators  # noqa: E402
from wiring.agencies import agency_http_client  # noqa: E402
from callgrind import OUT_VARIABLE, callgrind_command, counting, instructions_since_last  # noqa: E402

#: What a predecessor would hand over (route `after = "cciaa"`): a REA number for INPS/INAIL.
HANDED_OVER = {"numeroREA": "RM-1234567"}
STEPS = ("build", "sign", "receipt")


class _Clock:
    """Thread CPU seconds per step, summed over the deliveries of one phase."""

    def __init__(self) -> None:
        self.spent: dict[str, float] = defaultdict(float)

    def wrap(self, owner: Any, name: str, step: str) -> None:
        """Time `owner.name` (a synchronous callable) into `step`, if `owner` has it."""
        original = getattr(owner, name, None)
        if original is None:
            return
        spent = self.spent

        @functools.wraps(original)
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.thread_time()
            try:
                return original(*args, **kwargs)
            finally:
                spent[step] += time.thread_time() - t0

        setattr(owner, name, timed)


def _instrument(adapter: Any, clock: _Clock) -> None:
    """Time the steps of every contract version's adapter (instance attributes only)."""
    for version in adapter.adapters.values():
        signer = getattr(version, "_signer", None)
        if hasattr(version, "_receipt_from"):  # SOAP: _serialize = build + sign
            clock.wrap(version, "_serialize", "build")
            clock.wrap(version, "_receipt_from", "receipt")
            if signer is not None:
                clock.wrap(signer, "egress", "sign")
        else:  # REST
            clock.wrap(version.contract, "serialize", "build")
            clock.wrap(version, "_read_receipt", "receipt")
            if signer is not None:
                clock.wrap(signer, "headers", "sign")


def _settings(args: argparse.Namespace, endpoints: dict[str, str], secrets: Path) -> Any:
    base = load_settings()
    agencies = {name: conf.model_copy(update={"endpoint": endpoints.get(name, conf.endpoint)})
                for name, conf in base.agencies.items()}
    identity = base.identity.model_copy(update={
        "signing_key_file": str(secrets / "hub-signing.pem"),
        "signing_certificate_file": str(secrets / "hub-signing.crt"),
    })
    update: dict[str, Any] = {"agencies": agencies, "identity": identity}
    if args.external_dir:
        update["external_dir"] = args.external_dir
    return base.model_copy(update=update)


def _http_client(conf: Any, size: int, http: Any, pool: str) -> httpx.AsyncClient:
    """The worker's client for the agency, with `pool` ("" for the configured one); "httpx-plain"
    is a bare httpx client (no call deadline, no direct path), the one this benchmark used to build."""
    if pool != "httpx-plain":
        return agency_http_client(conf, size, http.model_copy(update={"pool": pool}) if pool else http)
    return httpx.AsyncClient(
        timeout=httpx.Timeout(conf.read_timeout, connect=conf.connect_timeout),
        limits=httpx.Limits(max_connections=size, max_keepalive_connections=size),
        transport=httpx.AsyncHTTPTransport(retries=0),
        trust_env=False,
    )


def _messages(routes: Any, samples: list[Any], agency: str, n: int) -> list[OutgoingMessage]:
    """`n` fresh messages for `agency` (new ids), planned from the samples in turn."""
    usable = [s for s in samples if any(r.agency == agency and r.applies_to(s.root)
                                        for r in routes.for_kind(s.kind))]
    out: list[OutgoingMessage] = []
    i = 0
    while len(out) < n:
        sample = usable[i % len(usable)]
        i += 1
        facts = FilingFacts(reference=f"CRV-2025-{i:06d}", kind=sample.kind, portal="bench",
                            declarant_tax_code=sample.declarant_tax_code,
                            declarant_role=sample.declarant_role,
                            received_at=datetime.now(UTC))
        for planned in plan_deliveries(routes, sample.root, facts):
            if planned.agency != agency:
                continue
            content, _ = fill_handoffs(planned.content, planned.handoffs, HANDED_OVER)
            out.append(OutgoingMessage(planned.message_id, planned.delivery_id, facts.reference,
                                       planned.agency, planned.operation, content,
                                       planned.contract_version))
    return out[:n]


async def _deliver_all(adapter: Any, messages: list[OutgoingMessage], policy: Any,
                       concurrency: int) -> tuple[int, list[str]]:
    queue = list(reversed(messages))
    failures: list[str] = []
    done = 0

    async def one() -> None:
        nonlocal done
        while queue:
            result = await deliver_with_retries(adapter, queue.pop(), policy)
            if result.succeeded:
                done += 1
            else:
                failures.append(f"{type(result.error).__name__}: {result.error}")

    await asyncio.gather(*(one() for _ in range(concurrency)))
    return done, failures


def contracts_routes_samples(settings: Any) -> tuple[Any, Any, list[Any]]:
    """The agency contracts, the checked route table and the sample filings, as `bootstrap` loads them."""
    validator = FilingValidator(max_bytes=settings.api.max_body_bytes, max_depth=settings.api.max_depth,
                                validators=settings.api.schema_validators)
    contracts = bootstrap.load_contracts(settings)
    routes = load_route_table(settings.path(settings.routes_file), settings.path(settings.mappings_dir))
    routes = bootstrap.checked_routes(settings, routes, contracts, validator)
    return contracts, routes, load_sample_filings(settings.path(settings.samples_dir), validator)


async def _run(args: argparse.Namespace, settings: Any, agencies: list[str]) -> dict[str, list[dict]]:
    contracts, routes, samples = contracts_routes_samples(settings)
    clients, adapters, policies, clocks = [], {}, {}, {}
    for name in agencies:
        conf = settings.agencies[name]
        client = _http_client(conf, args.concurrency, settings.http, args.pool)
        clients.append(client)
        runtime = bootstrap.build_agency_runtime(settings, contracts, name, client, concurrency=args.concurrency,
                                                 public_url="http://127.0.0.1:9")
        adapters[name], policies[name] = runtime.adapter, runtime.retry
        clocks[name] = _Clock()
        _instrument(adapters[name], clocks[name])
    results: dict[str, list[dict]] = defaultdict(list)
    counts = Path(os.environ[OUT_VARIABLE]) if OUT_VARIABLE in os.environ else None  # under callgrind
    try:
        for name in agencies:  # warm-up: contracts, caches, connections
            policy = policies[name]
            await _deliver_all(adapters[name], _messages(routes, samples, name, args.warmup),
                               policy, args.concurrency)
        for _ in range(args.rounds):
            for name in agencies:
                policy = policies[name]
                messages = _messages(routes, samples, name, args.deliveries)
                clock = clocks[name]
                clock.spent.clear()
                cpu0 = time.process_time()
                with counting(os.getpid()) if counts is not None else contextlib.nullcontext():
                    done, failures = await _deliver_all(adapters[name], messages, policy, args.concurrency)
                cpu = time.process_time() - cpu0
                if failures:
                    print(f"{name}: {len(failures)} failed, e.g. {failures[0]}", file=sys.stderr)
                n = len(messages)
                row = {"ok": done, "n": n, "total": cpu / n * 1000}
                row.update({step: clock.spent[step] / n * 1000 for step in STEPS})
                row["build"] -= row["sign"] if "egress" in _signed_by(adapters[name]) else 0.0
                row["rest"] = row["total"] - row["build"] - row["sign"] - row["receipt"]
                if counts is not None:
                    row["instructions"] = instructions_since_last(counts) / n
                results[name].append(row)
    finally:
        for adapter in adapters.values():
            await adapter.aclose()
        for client in clients:
            await client.aclose()
    return results


def _signed_by(adapter: Any) -> str:
    """`egress` when signing happens inside `_serialize` (SOAP), else `headers` or ``."""
    for version in adapter.adapters.values():
        signer = getattr(version, "_signer", None)
        if signer is not None:
            return "egress" if hasattr(version, "_receipt_from") else "headers"
    return ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--deliveries", type=int, default=400, help="per agency and round")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="the median round is reported")
    parser.add_argument("--warmup", type=int, default=40, help="deliveries per agency, not counted")
    parser.add_argument("--agencies", default="inps,inail,cciaa,runts")
    parser.add_argument("--pool", choices=("", "aiohttp", "httpx", "httpx-plain"), default="",
                        help="the agency client's HTTP pool (default: the configured `[http] pool`)")
    parser.add_argument("--external-dir", default="",
                        help="where `external:` contract documents live (default: the settings')")
    parser.add_argument("--instructions", action="store_true",
                        help="run again under valgrind's callgrind and print the instructions per delivery")
    args = parser.parse_args()
    if args.instructions and OUT_VARIABLE not in os.environ:
        counts = Path(tempfile.mkdtemp(prefix="crocevia-adapter-instructions-")) / "callgrind.out"
        command = callgrind_command([sys.executable, *sys.orig_argv[1:]], counts, trace_children=False)
        return subprocess.run(command, env={**os.environ, OUT_VARIABLE: str(counts)}, check=False).returncode
    agencies = [a for a in args.agencies.split(",") if a]
    configure_logging("warning")
    sims = start_simulators()
    try:
        secrets = Path(tempfile.mkdtemp(prefix="crocevia-bench-keys-"))
        endpoints = {agency: sims.soap_endpoint(agency) for agency in sims.urls}
        settings = _settings(args, endpoints, secrets)
        results = asyncio.run(_run(args, settings, agencies))
    finally:
        sims.stop()
    if args.instructions:
        print(f"adapter instructions per delivery, client process only (millions, valgrind callgrind, median of "
              f"{args.rounds} rounds of {args.deliveries}, concurrency {args.concurrency}; tree {ROOT})")
        for name in agencies:
            print(f"{name:8} {statistics.median(r['instructions'] for r in results[name]) / 1e6:8.3f} M")
    print(f"adapter CPU per delivery, client process only (ms, median of {args.rounds} rounds of "
          f"{args.deliveries}, concurrency {args.concurrency}, pool {args.pool or settings.http.pool}; tree {ROOT})")
    print(f"{'agency':8} {'ok':>9} {'total':>7} {'build':>7} {'sign':>7} {'receipt':>8} {'rest':>7}")
    for name in agencies:
        rows = results[name]
        med = {k: statistics.median(r[k] for r in rows) for k in ("total", *STEPS, "rest")}
        ok = f"{sum(r['ok'] for r in rows)}/{sum(r['n'] for r in rows)}"
        print(f"{name:8} {ok:>9} {med['total']:7.3f} {med['build']:7.3f} {med['sign']:7.3f} "
              f"{med['receipt']:8.3f} {med['rest']:7.3f}")
    print("build: contract build + schema validation; sign: WS-Security or ModI headers; receipt: "
          "reply check + receipt; rest: HTTP, event loop, retry wrapper")
    print(f"reproduce: .venv/bin/python bench/adapter_cpu.py --deliveries {args.deliveries} "
          f"--concurrency {args.concurrency} --rounds {args.rounds} --agencies {args.agencies}"
          + (f" --pool {args.pool}" if args.pool else "")
          + (f" --external-dir {args.external_dir}" if args.external_dir else "")
          + (" --instructions" if args.instructions else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
