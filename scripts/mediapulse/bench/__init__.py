"""`mediapulse bench`: the performance report."""
