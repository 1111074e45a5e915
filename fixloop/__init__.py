"""fixloop: catch and repair broken image edits."""
