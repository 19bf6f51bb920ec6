"""Filing kind → deliveries: routes, conditions, mapping into agency messages, aggregation."""

from routing.aggregate import aggregate_filing_state
from routing.plan import PlannedDelivery, plan_deliveries
from routing.routes import Route, RouteTable, load_route_table

__all__ = [
    "PlannedDelivery",
    "Route",
    "RouteTable",
    "aggregate_filing_state",
    "load_route_table",
    "plan_deliveries",
]
