"""Drivers decide WHERE attempts run: protocol.py is the seam, registry.py builds one by
name, one module per driver. Kept empty: the zygote imports this package first."""
