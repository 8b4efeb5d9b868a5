"""The scheduled ingest: reads the source database, writes baseline and staging files."""
