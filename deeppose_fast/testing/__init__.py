"""Helpers only tests use, never imported by the package: ``dots`` writes dot-people shards whose crops
can be checked pixel by pixel."""
