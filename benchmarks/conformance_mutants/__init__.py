"""Mutants of the book-style example and the script that measures the conformance suite's kill rate on them."""
