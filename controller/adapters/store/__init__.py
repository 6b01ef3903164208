"""SQLite: the schema and its migrations, submissions and receipts, principals."""
