"""The wire contract both sides import: messages, topics, config, signing, MQTT."""

__version__ = "0.1.0"
