"""Every configuration file is read strictly: a misspelt key or a choice outside the allowed
ones fails at load, naming the file and the dotted key (agency files, routes, mappings,
settings). The environment stays lenient: a variable that names no setting is ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from adapters.contracts import ContractConfigError, load_agency_catalog
from config.settings import PROJECT_ROOT, load_settings
from routing.routes import MappingError, load_route_table

AGENCY = """
[contracts.v1]
kind = "rest"
openapi = "acme.yaml"
[contracts.v1.receipt]
protocol_number = "protocollo"
"""
ROUTE = '[[route]]\nkind = "durc_request"\nagency = "acme"\noperation = "Op"\nmapping = "m"\n'
MAPPING = '[fields]\nname = "f:subject/f:name"\n'


def _agencies(tmp_path: Path, text: str) -> None:
    (tmp_path / "acme.toml").write_text(text)
    load_agency_catalog(tmp_path, project_root=tmp_path, external_dir=tmp_path)


def _routes(tmp_path: Path, routes: str, mapping: str = MAPPING) -> None:
    (tmp_path / "routes.toml").write_text(routes)
    (tmp_path / "m.toml").write_text(mapping)
    load_route_table(tmp_path / "routes.toml", tmp_path)


def _settings(tmp_path: Path, text: str) -> None:
    (tmp_path / "crocevia.toml").write_text(text)
    load_settings(tmp_path / "crocevia.toml")


def test_a_misspelt_key_in_an_agency_file_names_file_and_key(tmp_path: Path) -> None:
    """`limts` under the receipt's limits is refused, with the file and the table."""
    with pytest.raises(ContractConfigError,
                       match=r"acme.toml: \[contracts.v1.receipt.limits\]: unknown keys \['limts'\]"):
        _agencies(tmp_path, AGENCY + "[contracts.v1.receipt.limits]\nlimts = 3\n")


def test_a_wrong_choice_in_an_agency_file_names_the_allowed_values(tmp_path: Path) -> None:
    """A pattern outside blocking/pull/push is refused, listing them."""
    with pytest.raises(ContractConfigError,
                       match=r"acme.toml: contracts.v1.pattern: expected one of 'blocking', 'pull' or "
                             r"'push', got 'pul'"):
        _agencies(tmp_path, AGENCY.replace('kind = "rest"', 'kind = "rest"\npattern = "pul"'))


def test_a_misspelt_key_in_routes_toml_names_file_route_and_key(tmp_path: Path) -> None:
    """`on_rejct` was ignored (the route then held instead of cancelling); now it is refused."""
    with pytest.raises(MappingError, match=r"routes.toml route #1: on_rejct: unknown key"):
        _routes(tmp_path, ROUTE + 'on_rejct = "cancel"\n')


def test_a_misspelt_top_level_table_in_routes_toml_is_refused(tmp_path: Path) -> None:
    """`[[routes]]` for `[[route]]` used to load an empty table."""
    with pytest.raises(MappingError, match=r"routes.toml: routes: unknown key"):
        _routes(tmp_path, ROUTE.replace("[[route]]", "[[routes]]"))


def test_a_wrong_on_reject_names_the_allowed_values(tmp_path: Path) -> None:
    """on_reject is hold or cancel."""
    with pytest.raises(MappingError, match=r"route #1: on_reject: expected one of 'hold' or 'cancel'"):
        _routes(tmp_path, ROUTE + 'on_reject = "later"\n')


@pytest.mark.parametrize(("mapping", "message"), [
    ('[feilds]\nname = "f:subject/f:name"\n', r"m.toml: feilds: unknown key"),
    ('[fields]\nn = { xpath = "count(f:x)", typ = "int" }\n', r"m.toml.n: typ: unknown key"),
    ('[fields]\nn = { each = "f:x", feilds = { a = "f:a" } }\n', r"m.toml.n: feilds: unknown key"),
    ('[fields]\nn = { xpath = "f:x", type = "float" }\n',
     r"m.toml.n: type: expected one of 'int', 'bool' or 'str', got 'float'"),
], ids=["top-level", "xpath-rule", "each-rule", "type-choice"])
def test_a_misspelt_key_in_a_mapping_file_names_file_field_and_key(
        tmp_path: Path, mapping: str, message: str) -> None:
    """A typo in a mapping file was silently dropped (an empty map, a str instead of an int)."""
    with pytest.raises(MappingError, match=message):
        _routes(tmp_path, ROUTE, mapping)


def test_a_misspelt_key_in_the_settings_file_names_file_and_key(tmp_path: Path) -> None:
    """`[api] prot = 1` was ignored (the API kept its default port); now start-up fails."""
    with pytest.raises(ValueError, match=r"crocevia.toml: api.prot: unknown key"):
        _settings(tmp_path, "[api]\nprot = 9090\n")
    with pytest.raises(ValueError, match=r"crocevia.toml: agencies.inps.identity.profil: unknown key"):
        _settings(tmp_path, '[agencies.inps]\nendpoint = "http://x"\n[agencies.inps.identity]\n'
                            'profil = "wss"\n')


@pytest.mark.parametrize(("text", "message"), [
    ('[transport]\nkind = "rabit"\n', r"transport.kind: expected one of 'embedded' or 'rabbitmq'"),
    ('[agencies.inps]\nendpoint = "http://x"\n[agencies.inps.identity]\nprofile = "jwt"\n',
     r"agencies.inps.identity.profile: expected one of 'none', 'modi' or 'wss'"),
    ('log_level = "verbose"\n', r"log_level: expected one of 'debug', 'info'"),
], ids=["transport", "identity-profile", "log-level"])
def test_a_wrong_choice_in_the_settings_names_the_allowed_values(
        tmp_path: Path, text: str, message: str) -> None:
    """Closed choices are checked when the settings load, not later in bootstrap."""
    with pytest.raises(ValueError, match=message):
        _settings(tmp_path, text)


def test_an_explicit_override_with_an_unknown_key_is_refused() -> None:
    """Values passed in code are as strict as the file."""
    with pytest.raises(ValueError, match=r"api.portt: unknown key"):
        load_settings(api={"portt": 1})


def test_environment_variables_that_name_no_setting_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """The environment is shared with other programs: only variables naming a setting count."""
    monkeypatch.setenv("API__NOT_A_SETTING", "1")
    monkeypatch.setenv("DATABASE__PASSWORD", "for-another-tool")
    monkeypatch.setenv("AGENCIES__INPS__IDENTITY__COLOUR", "blue")
    monkeypatch.setenv("API__PORT", "9191")
    monkeypatch.setenv("LOG_LEVEL", "DEBUG")
    settings = load_settings()
    assert (settings.api.port, settings.log_level) == (9191, "debug")
    assert settings.agencies["inps"].identity.profile == "wss"


def test_every_shipped_configuration_file_loads() -> None:
    """The repository's own settings, agency files, routes and mappings all pass the strict readers."""
    settings = load_settings()
    load_agency_catalog(settings.path(settings.agencies_dir), project_root=PROJECT_ROOT,
                        external_dir=settings.path(settings.external_dir))
    load_route_table(settings.path(settings.routes_file), settings.path(settings.mappings_dir))
    data = PROJECT_ROOT / "tests" / "data" / "agencies"
    load_agency_catalog(data / "versioned" / "agencies", project_root=PROJECT_ROOT,
                        external_dir=settings.path(settings.external_dir))
    for routes in (data / "routes.toml", *sorted((data / "versioned").glob("routes-*.toml"))):
        load_route_table(routes, settings.path(settings.mappings_dir))
