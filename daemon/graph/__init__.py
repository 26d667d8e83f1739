"""The daemon's Microsoft Graph client: requests, delta rounds, ``$batch``."""
