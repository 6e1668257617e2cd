"""mmsent.harness."""
