"""One module per operation: its planning, preparation and task functions."""
