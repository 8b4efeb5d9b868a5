"""A handler module that fails while importing (settings checked at import, say)."""

raise RuntimeError("BUCKET_NAME is not set")
