"""``bcce doctor``: environment checks, each with a status, a message and a concrete fix."""
