"""Adapters: SOAP and REST machinery driven by each agency's declaration (config/agencies),
implementing the delivery port of `service.delivery_port`, with a shared retry wrapper and
error classifiers.

Importing this package loads no contract and opens no connection; builders do that, once.
"""

from adapters.base import deliver_with_retries
from adapters.registry import ADAPTER_BUILDERS, build_adapter
from adapters.rest import classify_http
from adapters.soap import classify_soap

__all__ = [
    "ADAPTER_BUILDERS",
    "build_adapter",
    "classify_http",
    "classify_soap",
    "deliver_with_retries",
]
