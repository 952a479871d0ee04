"""After go-live: the prediction records a run writes, watched window by window against the films it knows."""
