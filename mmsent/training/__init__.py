"""mmsent.training."""
