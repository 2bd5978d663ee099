"""Multi-workspace installs and hardening: OAuth, secrets at rest, data rights, retention, abuse limits."""
