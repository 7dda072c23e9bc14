"""Helpers only tests (and ``show`` examples) use: ``dots`` writes dot-people shards whose crops can be
checked pixel by pixel. Not imported by the package itself."""
