"""bcce's first-party ``sqlite`` plugin: the ``db:query``, ``db:migrate``, ``db:backup`` steps."""
