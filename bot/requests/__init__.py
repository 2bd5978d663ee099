"""Process requests: business calendars and SLA clocks."""
