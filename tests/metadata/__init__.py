"""Generation metadata read from and written to image files."""
