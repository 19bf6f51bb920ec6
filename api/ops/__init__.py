"""The operator API (`/v1/ops/...`): one module per concern, guarded by operator roles."""

__all__: list[str] = []
