"""Developer kit: a stateful Slack Web API emulator and a driver that sends signed Slack payloads."""

from bot.devkit.driver import Response, SlackDriver
from bot.devkit.emulator import Call, SlackEmulator

__all__ = ["Call", "Response", "SlackDriver", "SlackEmulator"]
