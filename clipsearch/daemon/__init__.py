"""The watch daemon (watcher.py) and what other commands use to talk to it (client.py)."""
