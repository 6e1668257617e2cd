"""mmsent.modeling."""
