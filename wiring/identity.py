"""Identity objects from settings: portal keys the hub verifies, the portals' and agencies'
signers, and the verifiers of agencies' callbacks.

Key files the embedded defaults name are created on first run (`security.keys`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from config.settings import AgencySettings, Settings
from security.callbacks import load_callback_credential
from security.keys import algorithm_of, ensure_private_key, ensure_self_signed_certificate, load_public_key
from security.modi import ModiSigner
from security.wssecurity import WsSecurityPlugin

# The API's verifiers (signxml: ~14 MiB of modules) load only where the API builds them; a
# worker signs but verifies nothing (issue 13: <= 120 MiB per process).
if TYPE_CHECKING:
    from adapters.factory import ContractSet
    from api.callbacks import CallbackVerifier
    from api.modi import PortalKey

__all__ = ["agency_signer", "callback_verifiers", "portal_keys", "portal_signer"]


def portal_signer(settings: Settings, portal: str, *, clock: Callable[[], float] = time.time) -> ModiSigner:
    """How the embedded portal `portal` signs its requests (the demo, `hub.py submit`): with
    its private key file, generated on first run beside the database."""
    conf = settings.portals[portal]
    if conf.private_key_file is None:
        raise KeyError(f"portal {portal!r} has no private key file here (production portals sign "
                       "their own requests; the hub holds only their public key)")
    key = ensure_private_key(settings.path(conf.private_key_file), conf.algorithm)
    return ModiSigner(issuer=portal, private_key=key, audience=settings.identity.audience, clock=clock)


def portal_keys(settings: Settings) -> dict[str, PortalKey]:
    """Each portal's public key, as configured inline, in a file, or from its own key file."""
    from api.modi import PortalKey

    keys: dict[str, PortalKey] = {}
    for portal, conf in settings.portals.items():
        if conf.public_key:
            public = load_public_key(conf.public_key.encode())
        elif conf.public_key_file:
            public = load_public_key(settings.path(conf.public_key_file).read_bytes())
        elif conf.private_key_file:
            public = ensure_private_key(settings.path(conf.private_key_file), conf.algorithm).public_key()
        else:
            raise ValueError(f"portal {portal!r} registers no public key")
        algorithm = algorithm_of(public)
        if algorithm != conf.algorithm and not conf.private_key_file:
            raise ValueError(f"portal {portal!r}: its key signs {algorithm}, the configuration says {conf.algorithm}")
        keys[portal] = PortalKey(portal=portal, public_key=public, algorithm=algorithm)
    return keys


def agency_signer(settings: Settings, name: str, conf: AgencySettings) -> WsSecurityPlugin | ModiSigner | None:
    """The outgoing identity an agency's profile asks for (config `[agencies.NAME.identity]`)."""
    profile = conf.identity.profile
    if profile == "none":
        return None
    ident = settings.identity
    key = ensure_private_key(settings.path(ident.signing_key_file), ident.signing_algorithm)
    if profile == "wss":
        certificate = ensure_self_signed_certificate(settings.path(ident.signing_certificate_file), key,
                                                     ident.issuer)
        return WsSecurityPlugin(key, certificate, ttl=conf.identity.ttl_seconds)
    # "modi": the settings' Literal admits no other profile.
    return ModiSigner(issuer=ident.issuer, private_key=key,
                      audience=conf.identity.audience or conf.endpoint, lifetime=conf.identity.ttl_seconds)


def callback_verifiers(settings: Settings, contracts: ContractSet) -> dict[str, CallbackVerifier]:
    """Per agency, the verifier of the callback credential its file declares (`[callback]`);
    agencies that declare none are left out, and their callbacks refused.

    The embedded default's simulated agencies name their `private_key` too: the pair is
    generated here on first run if the simulators have not made it yet.
    """
    from api.callbacks import ModiCallbackVerifier, WssCallbackVerifier

    ident = settings.identity
    verifiers: dict[str, CallbackVerifier] = {}
    for name, agency in contracts.catalog.agencies.items():
        spec = agency.callback
        if spec is None:
            continue
        certificate, public = load_callback_credential(spec.certificate, spec.private_key, f"{name} callbacks")
        if spec.profile == "wss":
            if certificate is None:
                raise ValueError(f"agency {name!r}: a wss callback credential needs an X.509 certificate, "
                                 f"{spec.certificate} holds a bare public key")
            verifiers[name] = WssCallbackVerifier(certificate, max_lifetime=ident.max_token_seconds,
                                                  leeway=ident.leeway_seconds)
        else:
            verifiers[name] = ModiCallbackVerifier(spec.issuer, public, ident.audience,
                                                   max_lifetime=ident.max_token_seconds,
                                                   leeway=ident.leeway_seconds)
    return verifiers
