"""The SQLite state database: schema migrations, rows and queries."""
