"""mmsent.clients."""
