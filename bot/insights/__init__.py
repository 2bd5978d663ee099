"""Customer insights, part 2: similarity, themes, duplicate suggestions, trends, closing the loop."""
