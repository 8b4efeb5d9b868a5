"""The merge service: applies each staging file of one table to latest and history."""
