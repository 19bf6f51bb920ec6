"""The operator API (`/v1/ops/...`): one module per concern."""
