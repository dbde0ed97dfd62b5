"""wagate."""
