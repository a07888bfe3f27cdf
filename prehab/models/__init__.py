"""Model builders and converters that are not a one-line `create_model` call."""
