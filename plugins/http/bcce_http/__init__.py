"""bcce's first-party ``http`` plugin: the ``http:request`` step type (see ``plugin``)."""
