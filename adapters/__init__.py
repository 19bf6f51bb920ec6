"""Adapters: SOAP and REST machinery driven by each agency's declaration (config/agencies),
over a shared port, retry wrapper and error classifiers.

Importing this package loads no contract and opens no connection; builders do that, once.
"""

from adapters.base import deliver_with_retries
from adapters.rest import classify_http
from adapters.soap import classify_soap

__all__ = [
    "classify_http",
    "classify_soap",
    "deliver_with_retries",
]
