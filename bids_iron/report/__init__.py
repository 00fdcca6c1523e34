"""HTML reports and the methods boilerplate."""
