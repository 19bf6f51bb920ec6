"""The HTTP edge: intake and status API, RFC 9457 problem details, portal authentication."""
