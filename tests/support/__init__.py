"""Test helpers: fake servers, trainer plug-ins, fixtures and synthetic data."""
