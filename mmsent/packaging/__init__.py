"""mmsent.packaging."""
