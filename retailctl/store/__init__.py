"""The store: connections, the embedded server, migrations, the run lock and `meta` state."""
