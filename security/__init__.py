"""Keys, ModI request signing (ID_AUTH_REST_02, INTEGRITY_REST_01, AUDIT_REST_02) and WS-Security."""
