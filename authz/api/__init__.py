"""Generated from proto/ by ``python -m authz.api.generate`` (``make proto``); do not edit."""
