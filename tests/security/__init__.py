"""Security and limits: each attack of issue 11 replayed, and the defence asserted."""
