"""Programs an operator runs by hand."""
