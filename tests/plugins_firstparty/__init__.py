"""Tests of the first-party plugins (plugins/), each driven through a sandboxed worker."""
