"""Customer accounts: who is behind a piece of feedback, and how much revenue."""
