"""What every stage shares: atomic file and folder writes, and typed settings with their CLI flags."""
