"""The quickstart on the built-in scenes: judge, feature network, measurements, report (see docs/quickstart.md)."""
