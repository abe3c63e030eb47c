"""bcce's first-party ``slack`` plugin: ``notification:slack`` and ``approval:slack``."""
