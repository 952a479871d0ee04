"""A run's report for a clinician: one HTML or PDF document, stored inside the run."""
