"""mmsent.serving."""
