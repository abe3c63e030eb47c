"""Artifact storage backends."""
