"""mmsent.evaluation."""
