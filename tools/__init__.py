"""Repair tools: everything that changes pixels (local OpenCV fixes, GPT Image edits, diffusion)."""
