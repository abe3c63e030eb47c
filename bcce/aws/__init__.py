"""AWS access: one lazily created boto3 session and client factories (not loaded at start-up)."""
