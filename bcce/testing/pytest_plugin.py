"""pytest plugin (pytest11 entry point): fixtures for bcce users and plugin authors."""
