"""The coordinator: the pure decision engine, the daemon around it, and the CLI."""
