"""Live venue connectors against the local venue servers (tests/venues)."""
