"""Built-in step executors. They register in the step registry exactly as plugin steps do."""
