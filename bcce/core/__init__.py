"""Core services shared by every container: logging, clock, ids, redaction, strict YAML."""
