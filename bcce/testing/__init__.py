"""Test support shipped with bcce."""
