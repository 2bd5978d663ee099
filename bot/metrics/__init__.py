"""Business metrics: registry, points, sources, alerts, charts."""
