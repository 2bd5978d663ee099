"""Customer insights: capturing feedback (service, Block Kit messaging, export)."""
