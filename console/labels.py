"""Words the pages translate from data (states, circuit, roles), listed here so that message
extraction (`pybabel extract -F console/babel.cfg`) puts them in the catalogues."""

__all__ = ["DATA_LABELS"]


def _(text: str) -> str:
    return text


#: Recipient and filing states, circuit states, operator roles.
DATA_LABELS = (
    _("pending"), _("waiting"), _("retrying"), _("acknowledged"), _("protocolled"), _("rejected"),
    _("undeliverable"), _("held"), _("cancelled"), _("in_progress"), _("partially_protocolled"),
    _("partially_rejected"), _("closed"), _("open"), _("half_open"), _("viewer"), _("operator"), _("admin"),
)
