"""Persistence: SQLAlchemy Core tables and repository functions over one `databases.Database`."""
