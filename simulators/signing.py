"""How the simulated agencies and the sandbox sign their callbacks: with the key pair their
agency file's `[callback]` names (generated on first run under var/secrets, mode 0600), so that
the hub verifies them exactly as it would a real agency's."""

from __future__ import annotations

from adapters.contracts import AgencyCatalog, AgencySpec, default_catalog
from security.callbacks import CallbackSigner, load_callback_keys

__all__ = ["callback_signer", "callback_signers"]


def callback_signer(agency: AgencySpec | None) -> CallbackSigner | None:
    """The signer of `agency`'s callbacks; None when its file declares no credential, or no
    private key (a real agency's certificate): its callbacks then go unsigned, and the hub
    refuses them."""
    spec = agency.callback if agency is not None else None
    if agency is None or spec is None or spec.private_key is None:
        return None
    key, certificate = load_callback_keys(spec.private_key, spec.certificate, f"{agency.name} callbacks")
    return CallbackSigner(spec.profile, key, certificate, issuer=spec.issuer)


def callback_signers(names: tuple[str, ...], catalog: AgencyCatalog | None = None) -> dict[str, CallbackSigner | None]:
    """Signers of the agencies `names`, from `catalog` (default: the shipped agency files)."""
    catalog = catalog or default_catalog()
    return {name: callback_signer(catalog.agencies.get(name)) for name in names}
