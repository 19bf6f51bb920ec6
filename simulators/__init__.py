"""Simulated agencies (INPS, INAIL, CCIAA, RUNTS): real servers that enforce our contracts.

Each one serves its contract (WSDL or OpenAPI), validates what it receives, numbers protocols
in the agency's format, recognises a repeated messageId and keeps a ledger of effects, with
faults on demand through `/_sim/*` (docs/agency-contracts.md).
"""

from simulators.launcher import SimulatorHandle, SimulatorStartError, start_simulators
from simulators.server import AGENCIES, DEFAULT_PORTS, serve_simulators

__all__ = [
    "AGENCIES",
    "DEFAULT_PORTS",
    "SimulatorHandle",
    "SimulatorStartError",
    "serve_simulators",
    "start_simulators",
]
