"""Repair prompt templates, one per repair of the failure library, and their renderer."""
