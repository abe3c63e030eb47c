"""bcce's first-party ``ldap`` plugin: the ``ldap`` choice of ``auth.provider``."""
